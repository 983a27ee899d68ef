from django.http import JsonResponse

from ..errors import error_body


def not_found(request):
    return JsonResponse(error_body("not_found", "There is no such API endpoint."), status=404)
