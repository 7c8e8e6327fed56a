"""What the playground accepts from a request, and the refusal (`Invalid`) naming each
bad field and why. No Django forms: the API takes JSON.

- `base`: JSON bodies (`parse_json`), row ids, `Invalid`;
- `params`: the parameter table (`PARAMETERS`), a submission (`clean_submission`),
  presets' fields, the wire body (`build_body`, `split_body`);
- `messages`: the rules for one chat message, the one message validator.
"""

from playground.validation.base import (
    ID_MAX,
    MAX_DEPTH,
    IdConverter,
    Invalid,
    is_id,
    parse_json,
    text_problem,
)
from playground.validation.messages import NAME_MAX, ROLES, clean_content, clean_message, message_problems
from playground.validation.params import (
    EXPORT_META_KEY,
    MODEL_MAX,
    PARAMETERS,
    RESERVED,
    build_body,
    clean_extra,
    clean_model,
    clean_params,
    clean_submission,
    clean_title,
    parameter_problem,
    split_body,
)

__all__ = [
    "EXPORT_META_KEY",
    "ID_MAX",
    "MAX_DEPTH",
    "MODEL_MAX",
    "NAME_MAX",
    "PARAMETERS",
    "RESERVED",
    "ROLES",
    "IdConverter",
    "Invalid",
    "build_body",
    "clean_content",
    "clean_extra",
    "clean_message",
    "clean_model",
    "clean_params",
    "clean_submission",
    "clean_title",
    "is_id",
    "message_problems",
    "parameter_problem",
    "parse_json",
    "split_body",
    "text_problem",
]
