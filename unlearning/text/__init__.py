"""Text: corpora, the character language model, its unlearning (influence on windows, fine-tuning)
and exposure of planted or found secrets (Carlini et al.)."""
