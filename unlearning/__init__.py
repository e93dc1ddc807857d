"""unlearnflow's algorithm library: pure functions and small dataclasses, tensors in, tensors out.

It never imports prefect or mlflow, so it can be used and tested on its own.
"""

from unlearning.errors import mask_messages_with


def _masked_by_the_detectors(text: str) -> str:
    """Every UnlearnError message goes through this (unlearning.errors.masked). The detectors load on
    the first message shown: most commands never show one, and `unlearn` hands a command over to a
    running service with argparse and a socket only."""
    from unlearning.detect.scan import masked_message

    return masked_message(text)


mask_messages_with(_masked_by_the_detectors)
