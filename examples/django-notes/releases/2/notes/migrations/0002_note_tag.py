from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.AddField("note", "tag", models.CharField(blank=True, max_length=40, null=True))]
