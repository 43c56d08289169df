"""JSON API under /api/v1 with an OpenAPI document generated from the code."""
from flask import current_app, json, render_template
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

PROBLEM = "application/problem+json"
TITLES = {401: "Inloggen vereist.", 403: "Geen toegang.", 404: "Niet gevonden.", 409: "Conflict.",
          422: "De invoer is niet geldig.", 429: "Te veel verzoeken."}


def problem(status: int, title: str, detail: str | None = None, errors: dict | None = None):
    """An RFC 9457 problem document."""
    body = {"type": "about:blank", "title": str(title), "status": status}
    if detail:
        body["detail"] = str(detail)
    if errors:
        body["errors"] = errors
    response = current_app.response_class(json.dumps(body), status=status, mimetype=PROBLEM)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="eventsvc"'
    return response


def http_problem(error: HTTPException):
    data = getattr(error, "data", None) or {}
    errors = None
    if "messages" in data:  # webargs: {location: {field: [messages]}}
        errors = {field: messages for location in data["messages"].values() for field, messages in location.items()}
    code = error.code or 500
    return problem(code, TITLES.get(code, error.name), detail=None if errors else error.description, errors=errors)


def service_problem(error):
    from ..errors import NotFound

    if isinstance(error, NotFound):
        return problem(404, TITLES[404], detail=str(error.message))
    if error.field:
        return problem(422, TITLES[422], errors={error.field: [str(error.message)]})
    return problem(409, str(error.message))


def problems(blp, responses: dict[int, str]):
    """Document the refusals of an operation, each an application/problem+json answer."""
    from .schemas import ProblemSchema

    def decorate(view):
        for status, description in responses.items():
            view = blp.alt_response(status, schema=ProblemSchema, content_type=PROBLEM,
                                    description=description)(view)
        return view

    return decorate


class ProblemApi(Api):
    """flask-smorest whose errors are problem documents, for the API's blueprints only."""

    def __init__(self, *args, **kwargs):
        from .schemas import ProblemSchema

        self.ERROR_SCHEMA = ProblemSchema
        super().__init__(*args, **kwargs)

    def _register_error_handlers(self):
        pass  # the HTML pages keep their own error pages; see _error_handlers

    def _register_responses(self):
        """Document every error as application/problem+json, as it is sent."""
        from flask_smorest.spec import prepare_response
        import http

        for status in http.HTTPStatus:
            response = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def _error_handlers(blp):
    from ..errors import ServiceError

    if not blp._got_registered_once:
        blp.register_error_handler(HTTPException, http_problem)
        blp.register_error_handler(ServiceError, service_problem)


def init_api(app):
    from .. import extensions
    from .organiser import blp as organiser_blp
    from .public import blp as public_blp

    app.config.setdefault("API_TITLE", "eventsvc")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", "/api/v1")
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api = ProblemApi(app, spec_kwargs={"info": {"description": "Events, registrations, reschedules and webhooks."}})
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for blp in (public_blp, organiser_blp):
        _error_handlers(blp)
        api.register_blueprint(blp)
        extensions.csrf.exempt(blp)  # bearer tokens, or no credentials at all: no cookie to ride on

    @app.get("/api/v1/docs")
    def api_docs():
        return render_template("api/docs.html", spec=api.spec.to_dict())

    app.extensions["eventsvc_api"] = api
    return api
