"""deepfaas model plug-in: a handwritten digits classifier trained on scikit-learn's digits."""

from deepfaas_digits.args import PredictArgs, TrainArgs
from deepfaas_digits.errors import DigitsInputError
from deepfaas_digits.plugin import DigitsPlugin, TrainOutput, plugin

__all__ = ["DigitsInputError", "DigitsPlugin", "PredictArgs", "TrainArgs", "TrainOutput", "plugin"]
