"""Compliance: erasure requests, the append-only ledger and its signing, batching, purges and
the certificate an erasure produces. Independent of the kind of model."""
