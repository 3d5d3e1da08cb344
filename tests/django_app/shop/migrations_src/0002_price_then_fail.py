from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False  # each operation commits on its own: the AddField stays when RunSQL fails
    dependencies = [("shop", "0001_initial")]
    operations = [
        migrations.AddField("order", "price", models.IntegerField(default=0)),
        migrations.RunSQL("SELEC oops"),
    ]
