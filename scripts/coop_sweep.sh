#!/usr/bin/env bash
# Cooperative-matrix product variants on one device call (issue 15 item 2): the staged
# tile kernel's epilogues and tiles, the direct and fragment-copy kernels' tiles, 4096^3
# and 8192^3 f16 -> f32, plain / --trans-a / --trans-b, every run with --check (f64
# reference) and --json.
# Prints one line per run: LABEL<TAB>JSON (or LABEL<TAB>FAILED rc=N and the error).
# About 3 to 4 minutes on an H200.
#
# usage: scripts/coop_sweep.sh [path/to/halfgrad]   (default target/release/halfgrad)
set -u
BIN=${1:-target/release/halfgrad}

run() {
    local label=$1
    shift
    local out
    out=$(timeout 90 "$BIN" bench matmul --dtype f16 --kernel coop --check --json "$@" 2>&1)
    local rc=$?
    if [ $rc -eq 0 ]; then
        printf '%s\t%s\n' "$label" "$(printf '%s\n' "$out" | tail -n 1)"
    else
        printf '%s\tFAILED rc=%d %s\n' "$label" $rc "$(printf '%s\n' "$out" | tail -n 3 | tr '\n' ' ')"
    fi
}

# The adapter's cooperative-matrix configurations (wgpu-hal's debug log).
RUST_LOG=wgpu_hal::vulkan::adapter=debug timeout 60 "$BIN" bench matmul --m 16 --n 16 --k 16 \
    --iters 1 --warmup 0 --json 2>&1 | grep -i "coop matrix" | head -n 40

S=(--m 4096 --n 4096 --k 4096)
# Staged tile kernel (workgroup slices): epilogues, workgroup order, tiles, K slices.
run base4k "${S[@]}"
run st-store "${S[@]}" --coop-tile 2x4:4x2:16 --coop-epilogue store
run st-subgroup "${S[@]}" --coop-tile 2x4:4x2:16 --coop-epilogue subgroup
run st-store-g8 "${S[@]}" --coop-tile 2x4:4x2:16 --coop-epilogue store --coop-group-m 8
run st-128x256 "${S[@]}" --coop-tile 2x4:4x4:16 --coop-epilogue store
run st-bk32 "${S[@]}" --coop-tile 2x4:4x2:32 --coop-epilogue store
# Direct kernel (fragments straight from global memory): SGMxSGN:FMxFN:BK, BK 32 =
# next K step loaded before the products, 16 = load then multiply.
D=(--coop-variant direct --coop-epilogue store)
run d-2x2:4x4:32 "${S[@]}" "${D[@]}" --coop-tile 2x2:4x4:32
run d-2x2:4x4:16 "${S[@]}" "${D[@]}" --coop-tile 2x2:4x4:16
run d-2x4:4x2:32 "${S[@]}" "${D[@]}" --coop-tile 2x4:4x2:32
run d-4x2:2x4:32 "${S[@]}" "${D[@]}" --coop-tile 4x2:2x4:32
run d-1x2:4x4:32 "${S[@]}" "${D[@]}" --coop-tile 1x2:4x4:32
run d-2x4:4x4:32 "${S[@]}" "${D[@]}" --coop-tile 2x4:4x4:32
run d-1x1:4x4:32 "${S[@]}" "${D[@]}" --coop-tile 1x1:4x4:32
run d-2x2:4x4:32-g8 "${S[@]}" "${D[@]}" --coop-tile 2x2:4x4:32 --coop-group-m 8
run d-2x2:4x4:32-subgroup "${S[@]}" --coop-variant direct --coop-epilogue subgroup --coop-tile 2x2:4x4:32
# Fragment-copy kernel (slices staged by coopLoad + coopStore): SGMxSGN:FMxFN:BK, BK the
# K of a slice (16, 32 or 64).
C=(--coop-variant copied --coop-epilogue store)
run c-2x4:4x2:16 "${S[@]}" "${C[@]}" --coop-tile 2x4:4x2:16
run c-2x4:4x2:32 "${S[@]}" "${C[@]}" --coop-tile 2x4:4x2:32
run c-2x2:4x4:16 "${S[@]}" "${C[@]}" --coop-tile 2x2:4x4:16
run c-2x2:4x4:32 "${S[@]}" "${C[@]}" --coop-tile 2x2:4x4:32
run c-2x4:4x4:16 "${S[@]}" "${C[@]}" --coop-tile 2x4:4x4:16
run c-4x2:4x4:16 "${S[@]}" "${C[@]}" --coop-tile 4x2:4x4:16
run c-2x4:4x2:32-g8 "${S[@]}" "${C[@]}" --coop-tile 2x4:4x2:32 --coop-group-m 8
# f16 outputs take the scratch epilogues.
run base4k-f16out "${S[@]}" --out-dtype f16
run d-2x2:4x4:32-f16out "${S[@]}" "${D[@]}" --coop-tile 2x2:4x4:32 --out-dtype f16
run c-2x4:4x2:32-f16out "${S[@]}" "${C[@]}" --coop-tile 2x4:4x2:32 --out-dtype f16

# Layouts at 4096^3, then 8192^3 in every layout.
for size in 4096 8192; do
    S=(--m $size --n $size --k $size)
    for layout in "" --trans-a --trans-b; do
        if [ $size = 4096 ] && [ -z "$layout" ]; then continue; fi
        L=${layout:--plain}
        run "base-$size$L" "${S[@]}" $layout
        run "c-2x4:4x2:32-$size$L" "${S[@]}" $layout "${C[@]}" --coop-tile 2x4:4x2:32
        run "d-2x2:4x4:32-$size$L" "${S[@]}" $layout "${D[@]}" --coop-tile 2x2:4x4:32
        run "d-2x2:4x4:32-g8-$size$L" "${S[@]}" $layout "${D[@]}" --coop-tile 2x2:4x4:32 --coop-group-m 8
    done
done
