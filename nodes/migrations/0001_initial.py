"""Nodes move from vms/ to their own app. Their tables keep their names (vms_node, vms_nodeusage), so
only the state changes: no row is copied and a database made before the move migrates in place."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('vms', '0011_image_placements'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables exist (made by vms' migrations): only Django's picture of the models moves.
            state_operations=[
                migrations.CreateModel(
                    name='Node',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=64, unique=True)),
                        ('uri', models.CharField(max_length=255, unique=True, verbose_name='libvirt URI')),
                        ('status', models.CharField(choices=[('online', 'Online'), ('unreachable', 'Unreachable'), ('disabled', 'Disabled')], default='online', max_length=16)),
                        ('virt_type', models.CharField(choices=[('kvm', 'KVM (hardware)'), ('qemu', 'QEMU (emulation)')], default='kvm', help_text='Chosen when the node is registered (KVMPANEL_VIRT_TYPE overrides); change it only on purpose: it applies to VMs defined from then on.', max_length=8, verbose_name='virtualization')),
                        ('pool_name', models.CharField(default='kvmpanel', max_length=64, verbose_name='storage pool')),
                        ('network_name', models.CharField(default='kvmpanel', max_length=64, verbose_name='network')),
                        ('console_host', models.CharField(default='127.0.0.1', help_text="Where the console bridge reaches this node's VNC servers: 127.0.0.1 for the local node, the node's management address for a remote one.", max_length=255, verbose_name='console address')),
                        ('hostname', models.CharField(blank=True, max_length=255)),
                        ('cpus', models.PositiveIntegerField(default=0, verbose_name='CPUs')),
                        ('memory_mib', models.PositiveBigIntegerField(default=0, verbose_name='memory (MiB)')),
                        ('storage_capacity_bytes', models.PositiveBigIntegerField(default=0)),
                        ('storage_available_bytes', models.PositiveBigIntegerField(default=0)),
                        ('libvirt_version', models.CharField(blank=True, max_length=32)),
                        ('last_seen_at', models.DateTimeField(blank=True, null=True)),
                        ('last_error', models.TextField(blank=True)),
                        ('stray_domains', models.JSONField(blank=True, default=list, help_text='Domains on this node that no VM of the panel owns, as the last reconcile found them. The panel never touches them.')),
                        ('reconciled_at', models.DateTimeField(blank=True, null=True)),
                    ],
                    options={
                        'db_table': 'vms_node',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='NodeUsage',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('bucket_seconds', models.PositiveIntegerField(default=0)),
                        ('at', models.DateTimeField(help_text='When the sample was read, or the start of the bucket.')),
                        ('cpu_percent', models.FloatField(default=0)),
                        ('memory_bytes', models.BigIntegerField(blank=True, null=True)),
                        ('disk_read_bps', models.FloatField(default=0)),
                        ('disk_write_bps', models.FloatField(default=0)),
                        ('net_rx_bps', models.FloatField(default=0)),
                        ('net_tx_bps', models.FloatField(default=0)),
                        ('running_vms', models.PositiveIntegerField(default=0)),
                        ('node', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='usage', to='nodes.node')),
                    ],
                    options={
                        'verbose_name': 'node usage sample',
                        'db_table': 'vms_nodeusage',
                        'indexes': [models.Index(fields=['bucket_seconds', 'at'], name='node_usage_by_time')],
                        'constraints': [models.UniqueConstraint(fields=('node', 'bucket_seconds', 'at'), name='one_node_usage_per_time')],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
