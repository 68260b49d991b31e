"""SQLAlchemy models of the whole domain; `Base.metadata` is what migrations and the schema
check compare against."""

from habitbot.models.base import Base
from habitbot.models.billing import (
    Balance,
    BalanceTransaction,
    Payment,
    PaymentRefund,
    PremiumNotice,
    Subscription,
)
from habitbot.models.habits import Habit, HabitCheckin, HabitSchedule
from habitbot.models.ops import AdminAlert, JobExecutionLog, ProcessedUpdate
from habitbot.models.reminders import ReminderDelivery
from habitbot.models.users import RestPeriod, User

__all__ = [
    "AdminAlert", "Balance", "BalanceTransaction", "Base", "Habit", "HabitCheckin",
    "HabitSchedule", "JobExecutionLog", "Payment", "PaymentRefund", "PremiumNotice",
    "ProcessedUpdate",
    "ReminderDelivery", "RestPeriod",
    "Subscription", "User",
]
