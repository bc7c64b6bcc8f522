"""Dataset builders (synthetic_fundus, eyepacs, idrid, messidor), preprocessing and the input pipeline."""
