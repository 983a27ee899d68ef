"""Nodes and images now live in their own apps (nodes/0001, images/0001): vms stops knowing them.

Only the state changes (the tables and their rows stay). The content types follow the models, so the
backoffice's history and any permission given on nodes or images keep pointing at them.
"""

import django.db.models.deletion
from django.db import migrations, models

MOVED = {"node": "nodes", "nodeusage": "nodes", "image": "images", "imageplacement": "images"}


def move_content_types(apps, schema_editor, forward=True):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model, app_label in MOVED.items():
        old, new = ("vms", app_label) if forward else (app_label, "vms")
        if ContentType.objects.filter(app_label=new, model=model).exists():
            continue  # already there (made by a run of post_migrate): leave both as they are
        ContentType.objects.filter(app_label=old, model=model).update(app_label=new)


def move_content_types_back(apps, schema_editor):
    move_content_types(apps, schema_editor, forward=False)



class Migration(migrations.Migration):

    dependencies = [
        ('images', '0001_initial'),
        ('nodes', '0001_initial'),
        ('vms', '0011_image_placements'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name='imageplacement',
                    name='image',
                ),
                migrations.AlterField(
                    model_name='virtualmachine',
                    name='image',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='vms', to='images.image'),
                ),
                migrations.AlterField(
                    model_name='virtualmachine',
                    name='iso',
                    field=models.ForeignKey(blank=True, help_text="The ISO in the VM's CD drive.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='vms_with_iso', to='images.image', verbose_name='ISO'),
                ),
                migrations.AlterField(
                    model_name='virtualmachine',
                    name='rescue_image',
                    field=models.ForeignKey(blank=True, help_text='Set while the VM runs a rescue system with its own disk as the second disk.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='rescued_vms', to='images.image'),
                ),
                migrations.RemoveField(
                    model_name='imageplacement',
                    name='node',
                ),
                migrations.AlterField(
                    model_name='virtualmachine',
                    name='node',
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='vms', to='nodes.node'),
                ),
                migrations.RemoveField(
                    model_name='nodeusage',
                    name='node',
                ),
                migrations.DeleteModel(
                    name='Image',
                ),
                migrations.DeleteModel(
                    name='ImagePlacement',
                ),
                migrations.DeleteModel(
                    name='Node',
                ),
                migrations.DeleteModel(
                    name='NodeUsage',
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, move_content_types_back),
    ]
