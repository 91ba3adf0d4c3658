// flashmemory/core/cuda/detail/ptx.cuh — thin wrappers over the PTX instructions the kernels share:
// asynchronous global→shared copies (cp.async, sm_80+), shared-memory matrix loads (ldmatrix), the bf16 and
// f16 tensor-core products m16n8k16 (mma.sync), programmatic dependent launch and a few bit-exact conversions.
// Not part of the API.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA "Matrix fragments for mma.m16n8k16"), with g = lane / 4 and
// t = lane % 4:  A (16×16, row-major) a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..);
// B (16×8, column-major) b0 = (2t..2t+1, g), b1 = (2t+8.., g);  C (16×8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..).
#pragma once

#include <flashmemory/config.hpp>

#include <cuda_runtime.h>

#include <cstdint>

namespace flashmemory::cuda::detail {

__device__ __forceinline__ std::uint32_t smem_address(void const* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global→shared copy; with `valid` false the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(void* smem, void const* global, bool valid = true) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem)), "l"(global),
               "r"(valid ? 16 : 0)
               : "memory");
}
// 8-byte and 4-byte variants for records that are not 16-byte aligned.
__device__ __forceinline__ void cp_async_8(void* smem, void const* global) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_address(smem)), "l"(global) : "memory");
}
__device__ __forceinline__ void cp_async_4(void* smem, void const* global) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_address(smem)), "l"(global) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most `Pending` of this thread's committed groups are still in flight.
template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

// Programmatic dependent launch (sm_90): a kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization
// may start once every CTA of the kernel before it has called launch_dependents (or exited); it must call
// wait_for_prerequisites before reading what that kernel writes (the wait returns once it has completed
// and its memory is visible).
__device__ __forceinline__ void launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
__device__ __forceinline__ void wait_for_prerequisites() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// Four 8×8 b16 matrices; lane l supplies the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], void const* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], void const* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem)));
}

// d += a · b, bf16 operands, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], std::uint32_t const (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d += a · b, f16 operands, f32 accumulators (same fragment layouts).
__device__ __forceinline__ void mma_f16(float (&d)[4], std::uint32_t const (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → packed f16x2 (round to nearest even), `lo` in the low half.
__device__ __forceinline__ std::uint32_t pack_f16x2(float lo, float hi) {
  std::uint32_t r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Two floats → packed bf16x2 (round to nearest even), `lo` in the low half.
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  std::uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float bf16_lo(std::uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(std::uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

// Two e4m3 bytes (the low byte first) → packed f16x2, exact (one sm_89+ instruction).
__device__ __forceinline__ std::uint32_t e4m3x2_to_f16x2(std::uint16_t v) {
  std::uint32_t r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"(v));
  return r;
}

// Two e4m3 bytes (the low byte first) → two floats, exact (sm_89+ hardware conversion through f16x2).
__device__ __forceinline__ float2 e4m3x2_to_float2(std::uint16_t v) {
  float2 r;
  asm("{\n .reg .b16 in, lo, hi;\n .reg .b32 h2;\n mov.b16 in, %2;\n cvt.rn.f16x2.e4m3x2 h2, in;\n"
      " mov.b32 {lo, hi}, h2;\n cvt.f32.f16 %0, lo;\n cvt.f32.f16 %1, hi;\n}\n"
      : "=f"(r.x), "=f"(r.y)
      : "h"(v));
  return r;
}

}  // namespace flashmemory::cuda::detail
