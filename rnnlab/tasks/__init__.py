"""Tasks: the glue between a data family, a model class and a loss (see `base.Task`).

One file per task family; each `conf/task/*.yaml` names one of these classes with `_target_`.
"""

from rnnlab.tasks.base import Batch, Task, make_model
from rnnlab.tasks.forecasting import ETTTask
from rnnlab.tasks.language_model import CharLMTask, LanguageModelTask, WordLMTask
from rnnlab.tasks.sentiment import SentimentTask
from rnnlab.tasks.synthetic import AddingTask, CopyTask

__all__ = [
    "AddingTask",
    "Batch",
    "CharLMTask",
    "CopyTask",
    "ETTTask",
    "LanguageModelTask",
    "SentimentTask",
    "Task",
    "WordLMTask",
    "make_model",
]
