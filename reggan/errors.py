"""The one exception type every stage raises for an expected failure the user can fix: a missing file, a corrupt
video, an absent camera, a wrong flag. The command line prints it as one line and exits with code 2."""


class UserError(Exception):
    """An expected failure: printed as one line, exit code 2, no traceback."""
