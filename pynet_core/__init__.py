"""The core of pynet: what both drivers and the composition roots build on (the store, errors,
body decoding, the per-call deadline, defaults). It imports nothing else of pynet."""
