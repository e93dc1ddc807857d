"""The request schema's `forget_class` and its mapping onto an image model's training set."""

import re

import numpy as np
import pytest
import torch

from unlearning.compliance.requests import request_from_dict
from unlearning.errors import UnlearnError
from unlearning.images.bundle import ImageBundle, class_index, image_request, unlearned_ids
from unlearning.images.cnn import CNN
from unlearning.images.data import build_digits


def test_forget_class_is_text_and_leaves_other_hashes_unchanged():
    req = request_from_dict({"id": "R", "model": "m", "forget_class": 3})
    assert req.forget_class == "3" and req.kinds() == ["forget_class"]
    plain = request_from_dict({"id": "R", "model": "m", "delete_records": ["a"]})
    # the hash of a request without forget_class is what it was before the field existed
    import hashlib
    import json
    content = {"id": "R", "model": "m", "delete_records": ["a"], "revoke_features": [], "fix_labels": {},
               "redact": None, "method": "auto"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert plain.content_hash() == hashlib.sha256(canonical.encode()).hexdigest()


def test_image_request_maps_ids_to_training_positions():
    digits = build_digits()
    train_ids = tuple(np.asarray(digits.record_ids)[digits.train][:100])
    bundle = ImageBundle(CNN.from_preset("tiny"), None, "tiny", digits.classes, train_ids)
    req = request_from_dict({"id": "R", "model": "digits", "delete_records": [train_ids[5], train_ids[2]]})
    image_req, delete, fixes = image_request(req, digits, bundle)
    assert image_req.forget.tolist() == [2, 5] and delete == [train_ids[5], train_ids[2]] and fixes == {}
    assert len(unlearned_ids(bundle, image_req)) == 98 and train_ids[2] not in unlearned_ids(bundle, image_req)
    req = request_from_dict({"id": "R", "model": "digits", "fix_labels": {train_ids[0]: 7}})
    image_req, _, fixes = image_request(req, digits, bundle)
    assert image_req.corrected.tolist() == [7] and fixes == {train_ids[0]: "7"}
    assert unlearned_ids(bundle, image_req)[-1] == train_ids[0]
    req = request_from_dict({"id": "R", "model": "digits", "forget_class": "4"})
    image_req, delete, _ = image_request(req, digits, bundle)
    y = torch.from_numpy(digits.labels[digits.positions(train_ids)])
    assert set(y[image_req.forget].tolist()) == {4} and len(delete) == int((digits.train & (digits.labels == 4)).sum())
    with pytest.raises(UnlearnError, match="unknown class 'x' in forget_class"):
        class_index(digits, "x", "forget_class")


@pytest.mark.parametrize("written", ["²", "٣", "３", "03", "+3", " 3", "3 ", "1_0"])
def test_a_class_index_is_ascii_digits_as_written(written):
    """'²' passes str.isdigit() but int() raises on it (a traceback from `forget` and `requests
    submit`); '٣' and '３' are digits to int() and were read as class 3: a class is named as written."""
    digits = build_digits()
    assert class_index(digits, "3", "forget_class") == 3
    with pytest.raises(UnlearnError, match=f"unknown class '{re.escape(written)}' in forget_class"):
        class_index(digits, written, "forget_class")
