from django.db import models


class Note(models.Model):
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    version = models.CharField(max_length=20, default="")  # the app version that wrote the row
    # Release 2: a new, nullable column (release 1 keeps writing rows without it during the rollout).
    tag = models.CharField(max_length=40, null=True, blank=True)
