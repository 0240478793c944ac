#!/bin/bash
# One-off GPU diagnostics; output in $OUT/diag.log
export PYTHONUNBUFFERED=1
D=$OUT
exec > >(tee $D/diag.log) 2>&1
set -x
g++ --version | head -1; $(g++ -print-prog-name=ld) --version | head -1; which strip; strip --version | head -1
t0=$(date +%s)
MTLKERNELS_CUDA=ON TORCH_CUDA_ARCH_LIST=9.0 CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps -q -e . -C build-dir=build/diag > $D/build.log 2>&1 || { tail -30 $D/build.log; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
SO=$(cd python_tests && python3 -c "import mtlkernels._C as m; print(m.__file__)")
echo "SO=$SO"
readelf -lW $SO | grep -i "eh_frame\|GNU_" ; readelf -SW $SO | grep -i "eh_frame\|nv\|sframe\|symtab"; readelf -dW $SO | grep -i "needed\|path"
CASE='import torch, mtlkernels
with torch._C._AutoDispatchBelowAutograd():
    try:
        torch.ops.mtlkernels.amtfl_reconstruction(torch.rand(5, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64), None, False, False, False, False)
    except RuntimeError as e: print("OK RuntimeError", str(e)[:100])'
cd python_tests
python3 -c "$CASE"; echo "plain rc=$?"
TORCH_SHOW_CPP_STACKTRACES=1 python3 -c "$CASE"; echo "stacktraces=1 rc=$?"
TORCH_SHOW_CPP_STACKTRACES=0 python3 -c "$CASE"; echo "stacktraces=0 rc=$?"
cd ..
# the same module linked again without strip
LINK=$(ninja -C build/diag -t commands | grep -- "-o _C" | tail -1)
echo "LINK: ${LINK:0:300}"
NOSTRIP=$(echo "$LINK" | sed 's/ && *[^&]*strip[^&]*//')
(cd build/diag && eval "${NOSTRIP/-o _C.cpython-312-x86_64-linux-gnu.so/-o /tmp/nostrip.so}") && ls -la /tmp/nostrip.so $SO
readelf -lW /tmp/nostrip.so | grep -i "eh_frame"
cp $SO /tmp/stripped.so; cp /tmp/nostrip.so $SO
(cd python_tests && python3 -c "$CASE"; echo "nostrip rc=$?")
strip /tmp/nostrip.so -o /tmp/restripped.so; cp /tmp/restripped.so $SO
(cd python_tests && python3 -c "$CASE"; echo "restripped rc=$?")
cp /tmp/stripped.so $SO
echo "elapsed $(( $(date +%s) - t0 )) s"
timeout 100 python3 diag/diag.py
echo "elapsed $(( $(date +%s) - t0 )) s"
(cd python_tests && timeout 100 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt -ex "info sharedlibrary" --args python3 -c "$CASE" 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -60)
echo "elapsed $(( $(date +%s) - t0 )) s"
