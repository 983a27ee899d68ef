from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from .models import User


@admin.register(User)
class PanelUserAdmin(UserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "vm_count", "last_login", "date_joined")
    list_filter = ("is_staff", "is_superuser", "is_active")

    def get_queryset(self, request):
        from django.db.models import Count, Q

        return (
            super()
            .get_queryset(request)
            .annotate(_vm_count=Count("vms", filter=Q(vms__deleted_at__isnull=True)))
        )

    @admin.display(description="VMs", ordering="_vm_count")
    def vm_count(self, user):
        return user._vm_count
