from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from ..errors import error_body


@csrf_exempt  # it changes nothing; a POST to a wrong path must get this answer, not a CSRF page
def not_found(request):
    return JsonResponse(error_body("not_found", "There is no such API endpoint."), status=404)
