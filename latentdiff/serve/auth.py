"""The optional API key: `Authorization: Bearer KEY`, or HTTP Basic with KEY as the password (any
user name), which is how A1111 clients such as webuiapi's `set_auth` send credentials."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

_bearer, _basic = HTTPBearer(auto_error=False), HTTPBasic(auto_error=False)  # None when absent


def api_key_dependency(api_key: str):
    def require_key(
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    ) -> None:
        given = token.credentials if token else credentials.password if credentials else None
        # compare_digest: the time taken does not tell how much of a guess was right.
        if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' (or HTTP Basic with KEY as the password)",
                headers={"WWW-Authenticate": "Bearer"},  # not Basic: browsers would pop up a login dialog
            )

    return require_key
