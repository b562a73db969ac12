"""reggan: real-time facial-expression synthesis with a regression layer and an adversarial refiner."""

__version__ = "0.1.0"
