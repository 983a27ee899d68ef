"""What the nodes app tells the apps above it, so it never imports them."""

from django.dispatch import Signal

# A node answered: it was just registered (registered=True) or its facts were refreshed.
# The image library listens, and copies over the images the node's pool lacks.
node_answered = Signal()  # sender=Node, node=..., registered=bool
