"""t2i: a reproducible text-to-image GAN pipeline (GAN-CLS and DF-GAN)."""

__version__ = "0.1.0"


class T2IError(Exception):
    """A user-facing error: bad params, bad input data, unwritable output.

    The CLI prints it as one line (``error: <message>``) and exits non-zero.
    """
