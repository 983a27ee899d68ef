from django.db import models


class StoreKind(models.TextChoices):
    DIRECTORY = "directory", "Directory"
    SFTP = "sftp", "SSH (sftp)"


class BackupStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Complete"
    FAILED = "failed", "Failed"
    PRUNED = "pruned", "Removed by retention"


class BackupKind(models.TextChoices):
    MANUAL = "manual", "Manual"
    SCHEDULED = "scheduled", "Scheduled"


class Frequency(models.TextChoices):
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"


ACTIVE_BACKUP_STATUSES = (BackupStatus.QUEUED, BackupStatus.RUNNING)
