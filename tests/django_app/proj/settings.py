import os

SECRET_KEY = "test-only"
INSTALLED_APPS = ["shop"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql", "HOST": os.environ["DB_HOST"], "NAME": "app",
    "USER": "app", "PASSWORD": os.environ["DB_PASSWORD"]}}
