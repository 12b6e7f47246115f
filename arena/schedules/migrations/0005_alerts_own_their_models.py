# The alert models now belong to the alerts app (arena/alerts/migrations/0001_initial.py), over the
# same tables: state only, the tables and their rows stay.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('schedules', '0004_team_notifications_plural_name'),
        ('alerts', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Notice'),
                migrations.DeleteModel(name='Regression'),
                migrations.DeleteModel(name='RegressionAlert'),
                migrations.DeleteModel(name='TeamNotifications'),
            ]
        )
    ]
