"""Upload an export and its dataset card to a Hugging Face dataset repository.

Through `huggingface_hub` (`pip install 'selfinstruct[hub]'`): the repo is created when it does
not exist, private unless asked otherwise, and the data and card go up in one commit. The token
is read from `HF_TOKEN` (as every Hugging Face tool reads it) and never written anywhere;
`HF_ENDPOINT` points the client at another hub, as in the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

from selfinstruct.errors import BackendError, SelfInstructError


def push_dataset(repo_id: str, files: dict[str, Path], *, private: bool, message: str) -> str:
    """Commit `files` (path in repo -> local file) to dataset repo `repo_id`; returns its URL."""
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise SelfInstructError(
            "--push-to-hub needs huggingface_hub: pip install 'selfinstruct[hub]'"
        ) from None
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise SelfInstructError(
            "--push-to-hub needs a Hugging Face token with write access in $HF_TOKEN"
        )
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, when it is first imported.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT"), token=token)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path))
        for name, path in files.items()
    ]
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no answer"
        raise BackendError(
            f"the hub refused the upload to {repo_id} ({status}): {str(exc).splitlines()[0]}; "
            "check the repo name and that $HF_TOKEN may write to it"
        ) from None
    return str(url)
