from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0004_runentry_scored_state"),
    ]

    operations = [
        migrations.AddField(
            model_name="generation",
            name="finish_reason",
            field=models.CharField(blank=True, default="", max_length=8),
        ),
        migrations.AddField(
            model_name="generation",
            name="tokens",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="generation",
            name="top_logprobs",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
