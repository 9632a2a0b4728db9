"""Tasks: the glue between a data family, a model class and a loss (see `base.Task`).

One file per task family; each `conf/task/*.yaml` names one of these classes with `_target_`, and
its keys are the constructor's keyword arguments (`base.check_config_keys`).
"""

from rnnlab.tasks.base import Batch, Task, check_config_keys, config_keys, make_model
from rnnlab.tasks.forecasting import ETTTask, ForecastTask
from rnnlab.tasks.language_model import CharLMTask, LanguageModelTask, TextLMTask, WordLMTask
from rnnlab.tasks.sentiment import (
    SentimentLMTask,
    SentimentTask,
    TextClassificationLMTask,
    TextClassificationTask,
)
from rnnlab.tasks.synthetic import (
    AddingTask,
    CopyTask,
    ModularArithmeticTask,
    MQARTask,
    ParityTask,
    RecallTask,
    SelectiveCopyTask,
    StateTrackingTask,
)

__all__ = [
    "AddingTask",
    "Batch",
    "CharLMTask",
    "CopyTask",
    "ETTTask",
    "ForecastTask",
    "LanguageModelTask",
    "ModularArithmeticTask",
    "MQARTask",
    "ParityTask",
    "RecallTask",
    "SelectiveCopyTask",
    "SentimentLMTask",
    "SentimentTask",
    "StateTrackingTask",
    "Task",
    "TextClassificationLMTask",
    "TextClassificationTask",
    "TextLMTask",
    "WordLMTask",
    "check_config_keys",
    "config_keys",
    "make_model",
]
