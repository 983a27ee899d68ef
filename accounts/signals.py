"""What the accounts app tells the apps above it, so it never imports them."""

from django.dispatch import Signal

# A customer was suspended (by staff). Receivers stop what the account runs and return how many
# things they asked to stop; suspension.suspend sums the answers for the operator's message.
account_suspended = Signal()  # sender=User model, user=..., by=the staff user
