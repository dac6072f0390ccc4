"""A CSR or BSR Jacobian does not surface torch's "sparse ... support is in beta" notice from inside
trackjac (it is emitted once per process, so this runs in a fresh one)."""
import subprocess
import sys

CODE = """
import warnings, torch, trackjac
warnings.simplefilter("always")
x = torch.randn(8, dtype=torch.float64)
with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter("always")
    J = trackjac.jacobian(lambda x: x * x.roll(1), x, layout=torch.sparse_bsr, blocksize=(2, 2))
    C = trackjac.jacobian(lambda x: x * x.roll(1), x, layout=torch.sparse_csr)
assert J.layout == torch.sparse_bsr and C.layout == torch.sparse_csr
beta = [str(r.message) for r in rec if "beta" in str(r.message)]
print("BETA", len(beta))
"""


def test_no_beta_notice_from_trackjac():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "BETA 0" in r.stdout
