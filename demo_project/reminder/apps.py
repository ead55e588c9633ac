from django.apps import AppConfig


class ReminderConfig(AppConfig):
    name = "reminder"
    verbose_name = "Reminder demo"
