"""Speculative decoding: proposers (n-gram prompt lookup, draft model) and their metrics; the
rejection sampler that verifies the proposals lives beside the sampler (sample/)."""
