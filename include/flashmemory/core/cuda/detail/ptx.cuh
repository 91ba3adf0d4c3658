// flashmemory/core/cuda/detail/ptx.cuh — thin wrappers over the PTX instructions the kernels share:
// asynchronous global→shared copies (cp.async, sm_80+), shared-memory matrix loads (ldmatrix), the bf16 and
// f16 tensor-core products m16n8k16 (mma.sync), the Hopper warpgroup products (wgmma, sm_90a only: the
// kernels that call them build for compute_90a), programmatic dependent launch and a few bit-exact
// conversions. Not part of the API.
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

// ---- warpgroup MMA (sm_90a) ------------------------------------------------------------------------------
// wgmma reads shared-memory operands through 64-bit descriptors (PTX ISA "Matrix Descriptor Format"):
// bits 0–13 start address >> 4, 16–29 leading byte offset >> 4, 32–45 stride byte offset >> 4, 62–63 the
// swizzle (1 = 128-byte). In the 128-byte swizzle a 1024-byte aligned atom is 8 rows of 128 bytes whose
// 16-byte chunk c of row r sits at chunk c ^ r; K-major operands advance along K by adding bytes to the start
// address inside an atom (the leading offset is unused), the stride offset steps 8 rows (MN for K-major, K
// for MN-major) and, for MN-major operands, the leading offset steps to the next 64-element atom along MN.
__device__ __forceinline__ std::uint64_t wgmma_descriptor_sw128(void const* smem, std::uint32_t leading_bytes,
                                                               std::uint32_t stride_bytes) {
  return static_cast<std::uint64_t>((smem_address(smem) & 0x3ffffu) >> 4) |
         static_cast<std::uint64_t>((leading_bytes >> 4) & 0x3fffu) << 16 |
         static_cast<std::uint64_t>((stride_bytes >> 4) & 0x3fffu) << 32 | std::uint64_t{1} << 62;
}
// Orders this thread's register accesses before the wgmma that follow (the accumulators and register A).
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most `Pending` committed wgmma groups of the warpgroup are in flight.
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(Pending) : "memory");
}
// Keeps the compiler from moving accesses of accumulator registers across wgmma_fence / wgmma_wait (the
// asynchronous products read and write them behind its back).
template <int N>
__device__ __forceinline__ void wgmma_fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// Generic-proxy writes to shared memory (st.shared, cp.async) become visible to the async proxy (wgmma)
// after this fence in the writing thread and a barrier.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

#define FLASHMEMORY_WGMMA_D8(i)                                                                             \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])
#define FLASHMEMORY_WGMMA_D32(i) \
  FLASHMEMORY_WGMMA_D8(i), FLASHMEMORY_WGMMA_D8(i + 8), FLASHMEMORY_WGMMA_D8(i + 16), FLASHMEMORY_WGMMA_D8(i + 24)

// d[64 × 64] (+)= A[64 × 16] · B[16 × 64]: bf16 operands in shared memory, both K-major; accumulate when
// `accumulate`, else overwrite. d is the warpgroup's accumulator fragment (the mma.m16n8 C layout per warp
// and 8-column chunk: d[4n..4n+1] = (16w + g, 8n + 2t..), d[4n+2..4n+3] = (16w + g + 8, 8n + 2t..)).
__device__ __forceinline__ void wgmma_m64n64k16_bf16_ss(float (&d)[32], std::uint64_t a, std::uint64_t b, bool accumulate) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : FLASHMEMORY_WGMMA_D32(0)
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

// d[64 × 256] += A[64 × 16] · B[16 × 256]: A bf16 in registers (the mma.m16n8k16 A fragment per warp), B bf16
// in shared memory, N-major (transposed).
__device__ __forceinline__ void wgmma_m64n256k16_bf16_rs_tb(float (&d)[128], std::uint32_t const (&a)[4], std::uint64_t b) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %133, 0;\n"
      " wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
      : FLASHMEMORY_WGMMA_D32(0), FLASHMEMORY_WGMMA_D32(32), FLASHMEMORY_WGMMA_D32(64), FLASHMEMORY_WGMMA_D32(96)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}
#undef FLASHMEMORY_WGMMA_D32
#undef FLASHMEMORY_WGMMA_D8

}  // namespace flashmemory::cuda::detail
