"""Request and response schemas of the scoring API.

The request schema is built from the served model's own fitted feature spec, so the API is not
tied to one data set: every raw column the spec reads is a required field (numeric columns take
a number or null, the others a string, a number or null), the entity-key column is optional,
and any other field is refused. NaN and infinity are refused too, naming the field: they are not
JSON numbers, and a client sending one has a bug worth hearing about. A missing value is `null`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    create_model,
)
from pydantic_core import PydanticCustomError

from keel.features import FeatureSpec
from keel.table import Column

__all__ = [
    "ErrorItem",
    "MalformedJSONError",
    "Message",
    "PredictResponse",
    "RecordSchema",
    "RequestError",
    "TooManyRecordsError",
    "ValidationFailedError",
    "build_record_schema",
    "parse_json",
]

_KEY_MAX = 200  # the prediction store's entity_key column
_FLOAT = np.dtype("float64")
_OBJECT = np.dtype(object)


class RequestError(ValueError):
    """A request the API refuses before scoring it."""


class MalformedJSONError(RequestError):
    """The body is not JSON (400)."""


class TooManyRecordsError(RequestError):
    """More records than `api.max_records` (413)."""


class ValidationFailedError(RequestError):
    """Fields that are missing, unknown or of the wrong type (422).

    Attributes:
        errors: One item per problem: `loc`, `field` (e.g. `records[0].adr`), `msg`, `type`.
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        """Create the error from its items."""
        super().__init__("; ".join(f"{e['field']}: {e['msg']}" for e in errors))
        self.errors = errors


def _finite(value: object, field_kind: str) -> float:
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise PydanticCustomError(
            "finite_number",
            "Input should be a finite number ({kind}); NaN and infinity are not valid, "
            "send null for a missing value",
            {"kind": field_kind},
        )
    return number


def _number(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("number_type", "Input should be a number or null")
    return _finite(value, "numeric field")


def _category(value: object) -> str | int | float | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("category_type", "Input should be a string, a number or null")
    if isinstance(value, float):
        return _finite(value, "categorical field")
    return value


def _key(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("key_type", "Input should be a string or an integer")
    text = str(value)
    if not 0 < len(text) <= _KEY_MAX:
        raise PydanticCustomError(
            "key_length", "Input should have 1 to {max} characters", {"max": _KEY_MAX}
        )
    return text


_NUMBER_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "null"}]}
_CATEGORY_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}
_KEY_SCHEMA = {
    "anyOf": [{"type": "string", "minLength": 1, "maxLength": _KEY_MAX}, {"type": "integer"}]
}
Number = Annotated[float | None, PlainValidator(_number), WithJsonSchema(_NUMBER_SCHEMA)]
Category = Annotated[
    str | int | float | None, PlainValidator(_category), WithJsonSchema(_CATEGORY_SCHEMA)
]
Key = Annotated[str | None, PlainValidator(_key), WithJsonSchema(_KEY_SCHEMA)]


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(body)"


def _problems(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": ["body", *err["loc"]],
            "field": _location(err["loc"]),
            "msg": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def parse_json(body: bytes) -> Any:
    """Parse a request body (NaN and Infinity tokens parse, and are refused by the schema).

    Raises:
        MalformedJSONError: The body is empty, not UTF-8, not JSON or nested too deeply; the
            message says where.
    """
    if not body.strip():
        raise MalformedJSONError('malformed JSON: the body is empty; send {"records": [...]}')
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise MalformedJSONError("malformed JSON: the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise MalformedJSONError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # e.g. 100,000 nested arrays: the parser gives up, so do we
        raise MalformedJSONError("malformed JSON: nested too deeply") from None


@dataclass(frozen=True)
class RecordSchema:
    """The request schema of one model, and how validated records become a frame.

    Attributes:
        request_model: The pydantic model of a whole request body.
        numeric: Raw columns that take numbers.
        other: Raw columns that take strings or numbers (categorical, or read by derived
            features).
        key: The optional entity-key field, if any.
        max_records: Records per request.
    """

    request_model: type[BaseModel]
    numeric: tuple[str, ...]
    other: tuple[str, ...]
    key: str | None
    max_records: int

    def validate(self, payload: Any) -> list[dict[str, Any]]:
        """Check a parsed body; return its records (column -> value, plus the key if given).

        Raises:
            TooManyRecordsError: More records than allowed.
            ValidationFailedError: Anything else is wrong; every problem is listed.
        """
        return self.validate_request(payload)[0]

    def validate_request(self, payload: Any) -> tuple[list[dict[str, Any]], dt.datetime | None]:
        """`validate`, plus the request's `as_of` (None when not given or not used)."""
        if isinstance(payload, dict) and isinstance(payload.get("records"), list):
            count = len(payload["records"])
            if count > self.max_records:
                raise TooManyRecordsError(
                    f"too many records: {count} in one request, at most {self.max_records} "
                    "(api.max_records); split the request"
                )
        try:
            request = self.request_model.model_validate(payload)
        except ValidationError as exc:
            raise ValidationFailedError(_problems(exc)) from None
        records = [r.model_dump(by_alias=True) for r in request.records]  # type: ignore[attr-defined]
        return records, getattr(request, "as_of", None)

    def columns(self, records: list[dict[str, Any]]) -> dict[str, Column]:
        """Validated records as columns: name -> (values, dtype), the input of
        `keel.matrix.matrix_from_columns`; the values and dtypes of `frame`'s columns."""
        numbers, others = self._blocks(records)
        columns: dict[str, Column] = {
            name: (numbers[:, i], _FLOAT) for i, name in enumerate(self.numeric)
        }
        columns.update((name, (others[:, j], _OBJECT)) for j, name in enumerate(self.other))
        return columns

    def frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        """Validated records as the raw frame batch scoring would read (numbers as float64,
        as a CSV reader would give them; the others as sent, `object`)."""
        numbers, others = self._blocks(records)
        numeric_columns, other_columns = self._columns
        return pd.concat(
            [
                pd.DataFrame(numbers, columns=numeric_columns, copy=False),
                pd.DataFrame(others, columns=other_columns, dtype=object),
            ],
            axis=1,
        )

    def _blocks(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        # Two blocks built at once: numbers (None -> NaN) and the others as sent, like a CSV
        # column of mixed types.
        numbers = np.array(
            [[np.nan if r[c] is None else r[c] for c in self.numeric] for r in records],
            dtype="float64",
        ).reshape(len(records), len(self.numeric))
        others = np.array([[r[c] for c in self.other] for r in records], dtype=object).reshape(
            len(records), len(self.other)
        )
        return numbers, others

    @cached_property
    def _columns(self) -> tuple[pd.Index, pd.Index]:
        # Made once: pandas would otherwise build (and infer) the column index per request.
        return pd.Index(self.numeric, dtype=object), pd.Index(self.other, dtype=object)

    def json_schema(self) -> dict[str, Any]:
        """The request body's JSON schema (for the OpenAPI document)."""
        return self.request_model.model_json_schema(ref_template="#/components/schemas/{model}")


def build_record_schema(
    spec: FeatureSpec, *, key: str | None, max_records: int, title: str = "Record"
) -> RecordSchema:
    """Build the request schema of a model from its fitted feature spec.

    Args:
        spec: The model's feature spec (its `required_columns` are the fields).
        key: The entity-key column name (an optional field), or None.
        max_records: Records per request.
        title: The record schema's name in the OpenAPI document.

    Returns:
        The schema.
    """
    # History features are computed from known outcomes (the request gives their keys).
    numeric = tuple(sorted(set(spec.numeric) - set(spec.history_columns)))
    other = tuple(sorted(spec.input_columns - set(numeric)))
    fields: dict[str, Any] = {}
    for i, name in enumerate(numeric):
        fields[f"n{i}"] = (Number, Field(alias=name))
    for i, name in enumerate(other):
        fields[f"c{i}"] = (Category, Field(alias=name))
    if key is not None and key not in spec.required_columns:
        fields["entity_key"] = (
            Key,
            Field(None, alias=key, description="Your id of the record (kept with the prediction)."),
        )
    else:
        key = None
    record = create_model(
        title, __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields
    )
    extra: dict[str, Any] = {}
    if spec.history:
        extra["as_of"] = (
            dt.datetime | None,
            Field(
                None,
                description=(
                    "When the records are scored, for their outcome-history features: outcomes "
                    "known before this day count (ISO date or time; default: now)."
                ),
            ),
        )
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        **extra,
        records=(
            list[record],
            # More than max_records is refused before validation, with 413 (see `validate`).
            Field(
                min_length=1,
                description=f"1 to {max_records} records.",
                json_schema_extra={"maxItems": max_records},
            ),
        ),
    )
    return RecordSchema(request, numeric, other, key, max_records)


class Reason(BaseModel):
    """One reason code: a feature, its value and its SHAP contribution (log-odds)."""

    feature: str
    value: str | None
    contribution: float


class Prediction(BaseModel):
    """The prediction of one record."""

    entity_key: str = Field(description="The record's key: yours, or one made up (`api-...`).")
    score: float
    decision: int = Field(description="1 when score >= the configured threshold.")
    model_version: int
    reasons: list[Reason]


class PredictResponse(BaseModel):
    """Predictions in the order of the records."""

    model: str
    model_version: int = Field(description="The version that scored every record.")
    threshold: float
    predictions: list[Prediction]


class Message(BaseModel):
    """An error with a message."""

    detail: str


class ErrorItem(BaseModel):
    """One validation problem."""

    loc: list[str | int]
    field: str = Field(description="Where, e.g. `records[0].adr`.")
    msg: str
    type: str


class ValidationMessage(BaseModel):
    """Every validation problem of a request."""

    detail: list[ErrorItem]
