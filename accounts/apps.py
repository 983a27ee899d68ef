from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        from . import audit, sessions  # noqa: F401  (connect the sign-in and sign-out signals)
