"""Images move from vms/ to their own app; their tables keep their names (vms_image, vms_imageplacement)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('nodes', '0001_initial'),
        ('vms', '0011_image_placements'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables exist (made by vms' migrations): only Django's picture of the models moves.
            state_operations=[
                migrations.CreateModel(
                    name='Image',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=100, unique=True)),
                        ('os_family', models.CharField(choices=[('debian', 'Debian'), ('ubuntu', 'Ubuntu'), ('almalinux', 'AlmaLinux'), ('rocky', 'Rocky Linux'), ('linux', 'Other Linux'), ('windows', 'Windows'), ('other', 'Other')], default='debian', max_length=16)),
                        ('format', models.CharField(choices=[('qcow2', 'qcow2'), ('raw', 'raw'), ('iso', 'ISO (installer or rescue CD)')], default='qcow2', max_length=8)),
                        ('volume_name', models.CharField(blank=True, help_text="Volume name in each node's storage pool (chosen for images added by URL).", max_length=200, unique=True)),
                        ('source_url', models.URLField(blank=True, help_text='http(s) address of a qcow2, raw or ISO image; the panel downloads and checks it.', max_length=2000, verbose_name='download URL')),
                        ('checksum_sha256', models.CharField(blank=True, help_text='Optional when adding by URL: the download must match it. Filled in from the file.', max_length=64, verbose_name='SHA-256')),
                        ('status', models.CharField(choices=[('pending', 'Waiting to download'), ('downloading', 'Downloading'), ('placing', 'Copying to the nodes'), ('ready', 'Ready'), ('failed', 'Failed')], default='ready', max_length=16)),
                        ('downloaded_bytes', models.PositiveBigIntegerField(default=0)),
                        ('total_bytes', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('error', models.TextField(blank=True)),
                        ('size_bytes', models.PositiveBigIntegerField(default=0)),
                        ('min_disk_gb', models.PositiveIntegerField(default=2)),
                        ('default_user', models.CharField(default='debian', max_length=32)),
                        ('cloud_init', models.BooleanField(default=True, help_text='VMs from this image get a NoCloud seed: hostname, password, SSH keys, network.', verbose_name='uses cloud-init')),
                        ('rescue', models.BooleanField(default=False, help_text="Offer it for rescue mode. Its root file system must not share its UUID with customers' images (a separate build does not).", verbose_name='rescue system')),
                        ('active', models.BooleanField(default=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'db_table': 'vms_image',
                        'ordering': ['name'],
                    },
                ),
                migrations.CreateModel(
                    name='ImagePlacement',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('ready', models.BooleanField(default=False)),
                        ('placed_at', models.DateTimeField(blank=True, null=True)),
                        ('image', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='placements', to='images.image')),
                        ('node', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='image_placements', to='nodes.node')),
                    ],
                    options={
                        'db_table': 'vms_imageplacement',
                    },
                ),
                migrations.AddField(
                    model_name='image',
                    name='nodes',
                    field=models.ManyToManyField(blank=True, help_text='Nodes whose pool holds this image (VMs are only placed there).', related_name='images', through='images.ImagePlacement', to='nodes.node'),
                ),
                migrations.AddConstraint(
                    model_name='imageplacement',
                    constraint=models.UniqueConstraint(fields=('image', 'node'), name='one_placement_per_image_and_node'),
                ),
            ],
            database_operations=[],
        ),
    ]
