# The alert models take over the tables the schedules app created: state only, no row moves.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('evaluations', '0003_judge'),
        ('teams', '0001_initial'),
        ('schedules', '0004_team_notifications_plural_name'),
    ]

    state_operations = [
        migrations.CreateModel(
            name='RegressionAlert',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('regressed', models.PositiveIntegerField(default=0)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('run', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='regression_alert', to='evaluations.run')),
            ],
            options={
                'db_table': 'schedules_regressionalert',
            },
        ),
        migrations.CreateModel(
            name='Regression',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('score', models.FloatField()),
                ('previous_score', models.FloatField()),
                ('delta', models.FloatField()),
                ('delta_low', models.FloatField()),
                ('delta_high', models.FloatField()),
                ('method', models.CharField(max_length=10)),
                ('previous_run', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='evaluations.run')),
                ('run_entry', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='regression', to='evaluations.runentry')),
                ('alert', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='regressions', to='alerts.regressionalert')),
            ],
            options={
                'db_table': 'schedules_regression',
            },
        ),
        migrations.CreateModel(
            name='TeamNotifications',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('webhook_url', models.URLField(blank=True, max_length=500)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('team', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to='teams.team')),
            ],
            options={
                'verbose_name': 'team notifications',
                'verbose_name_plural': 'team notifications',
                'db_table': 'schedules_teamnotifications',
            },
        ),
        migrations.CreateModel(
            name='Notice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('channel', models.CharField(choices=[('email', "Email to the team's owners"), ('webhook', "The team's webhook")], max_length=10)),
                ('target', models.JSONField(help_text="the owners' addresses, or the webhook URL, when the alert was recorded")),
                ('key', models.CharField(max_length=64, unique=True)),
                ('state', models.CharField(choices=[('pending', 'Not delivered yet'), ('sent', 'Delivered'), ('failed', 'Given up')], default='pending', max_length=10)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                ('claimed_until', models.DateTimeField(blank=True, help_text='a worker is sending it until then', null=True)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('status', models.PositiveSmallIntegerField(blank=True, help_text="the webhook's last HTTP status", null=True)),
                ('error', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('alert', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='notices', to='alerts.regressionalert')),
            ],
            options={
                'db_table': 'schedules_notice',
                'ordering': ['alert', 'channel'],
                'constraints': [models.UniqueConstraint(fields=('alert', 'channel'), name='one_notice_per_channel')],
            },
        ),
    ]

    operations = [migrations.SeparateDatabaseAndState(state_operations=state_operations)]
