"""slicing: ONNX models to provable, linked EZKL slices (bundles), proofs and their verification.

The only package that imports ezkl or onnx. Never imports node/, p2p/ or ledger/.
"""
