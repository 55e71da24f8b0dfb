// Runs fastrank's CUDA kernels on a CPU, for checks on machines without a GPU (never
// used on a device). Included by a host C++20 translation unit before the kernel
// sources (fastrank.cuda_sources.build_host_library writes it); compile with
// -ffp-contract=off so that float arithmetic rounds as the __f*_rn intrinsics do.
//
// Model: a launch runs its blocks one after another; a block's threads are fibers
// (ucontext) on the calling thread, switched round-robin: each runs until it reaches a
// barrier or returns, and only when all have done so does the next round start - the
// semantics of __syncthreads (a thread that returned counts as arrived, so nothing can
// hang). A warp shuffle is an exchange through memory around a barrier. __shared__
// variables become function statics, shared by the threads of the one block running at a
// time. Kernels that never synchronise may be run "serially" (every thread of every block
// in turn, no fibers), which is faster. Only 1-D grids and blocks, as the kernels use.
#ifndef FASTRANK_HOST_EMULATION_CUH
#define FASTRANK_HOST_EMULATION_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "host_emulation.cuh is for host compilers only"
#endif

#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

using std::isfinite;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
// extern __shared__ T name[] (dynamic shared memory, sized by the launch): one buffer of
// the most a block can have on any device (227 KiB), for the one block running at a time.
alignas(16) static unsigned char fr_emu_dynamic_shared[232448];
#define FR_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(fr_emu_dynamic_shared)

struct fr_emu_uint3 { unsigned int x, y, z; };

fr_emu_uint3 threadIdx = {0, 0, 0};
fr_emu_uint3 blockIdx = {0, 0, 0};
fr_emu_uint3 blockDim = {1, 1, 1};
fr_emu_uint3 gridDim = {1, 1, 1};

struct fr_emu_fiber {
    ucontext_t context;
    std::vector<char> stack;
    bool done;
    unsigned phase;   // shuffles done, for alternating exchange buffers
};

static std::vector<fr_emu_fiber> fr_emu_fibers;
static ucontext_t fr_emu_scheduler;
static int fr_emu_current = -1;       // fiber running, -1 when running serially
static int fr_emu_error = 0;          // set when a serial kernel synchronises
static void (*fr_emu_thunk)(void**) = nullptr;
static void** fr_emu_args = nullptr;

inline void __syncthreads()
{
    if (fr_emu_current < 0) {
        fr_emu_error = 1;
        return;
    }
    swapcontext(&fr_emu_fibers[fr_emu_current].context, &fr_emu_scheduler);
}

// A warp shuffle over the whole block: every thread writes its value, all meet at a
// barrier, each reads that of lane from(lane) of its own warp (its own value where that
// lane is past the warp's or the block's end).
template <class T, class From>
inline T fr_emu_shuffle(T v, From from)
{
    static T exchange[2][1024];
    if (fr_emu_current < 0) {
        fr_emu_error = 1;
        return v;
    }
    const unsigned slot = fr_emu_fibers[fr_emu_current].phase++ & 1u;
    const unsigned me = threadIdx.x;
    exchange[slot][me] = v;
    __syncthreads();
    const unsigned lane = from(me & 31u);
    const unsigned other = (me & ~31u) | lane;
    return lane < 32u && other < blockDim.x ? exchange[slot][other] : v;
}

template <class T>
inline T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta)
{
    return fr_emu_shuffle(v, [delta](unsigned lane) { return lane + delta; });
}

template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, unsigned lane_mask)
{
    return fr_emu_shuffle(v, [lane_mask](unsigned lane) { return lane ^ lane_mask; });
}

// Blocks run one after another: atomics are plain updates, fences nothing.
inline unsigned atomicAdd(unsigned* address, unsigned value)
{
    const unsigned old = *address;
    *address = old + value;
    return old;
}

inline void __threadfence() {}

static void fr_emu_fiber_main()
{
    fr_emu_thunk(fr_emu_args);
    fr_emu_fibers[fr_emu_current].done = true;   // then uc_link returns to the scheduler
}

template <class... A, std::size_t... I>
inline void fr_emu_call(void (*kernel)(A...), void** args, std::index_sequence<I...>)
{
    kernel(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <class... A>
inline void fr_emu_invoke(void (*kernel)(A...), void** args)
{
    fr_emu_call(kernel, args, std::index_sequence_for<A...>{});
}

// A kernel's parameters, a letter each, for the launcher's check of its arguments: 'p'
// a pointer, 'i' / 'I' a signed / unsigned 32-bit integer, 'l' / 'L' 64-bit, 'f' float,
// 'd' double ('?' anything else).
template <class T>
constexpr char fr_emu_code()
{
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) return 'p';
    else if constexpr (std::is_same_v<U, float>) return 'f';
    else if constexpr (std::is_same_v<U, double>) return 'd';
    else if constexpr (std::is_integral_v<U> && sizeof(U) == 4) return std::is_signed_v<U> ? 'i' : 'I';
    else if constexpr (std::is_integral_v<U> && sizeof(U) == 8) return std::is_signed_v<U> ? 'l' : 'L';
    else return '?';
}

template <class... A>
inline const char* fr_emu_signature(void (*)(A...))
{
    static const char letters[] = {fr_emu_code<A>()..., '\0'};
    return letters;
}

// Run ``thunk(args)`` as a kernel on ``grid`` blocks of ``block`` threads. Returns 0; -1
// when a kernel run serially tried to synchronise (its results are then wrong); -3 for a
// configuration CUDA refuses (no block, more than 2^31 - 1 blocks, a block of more than
// 1024 threads or not whole warps), running nothing.
inline int fr_emu_run(void (*thunk)(void**), long long grid, int block, void** args, int serial)
{
    if (grid < 1 || grid > 2147483647LL || block < 32 || block > 1024 || block % 32)
        return -3;
    gridDim = {(unsigned)grid, 1, 1};
    blockDim = {(unsigned)block, 1, 1};
    fr_emu_error = 0;
    fr_emu_current = -1;
    if (serial) {
        for (long long b = 0; b < grid; ++b)
            for (int t = 0; t < block; ++t) {
                blockIdx = {(unsigned)b, 0, 0};
                threadIdx = {(unsigned)t, 0, 0};
                thunk(args);
            }
        return fr_emu_error ? -1 : 0;
    }
    fr_emu_thunk = thunk;
    fr_emu_args = args;
    fr_emu_fibers.resize(block);
    for (auto& f : fr_emu_fibers)
        if (f.stack.size() < (1u << 16)) f.stack.resize(1u << 16);
    for (long long b = 0; b < grid; ++b) {
        blockIdx = {(unsigned)b, 0, 0};
        for (int t = 0; t < block; ++t) {
            fr_emu_fiber& f = fr_emu_fibers[t];
            getcontext(&f.context);
            f.context.uc_stack.ss_sp = f.stack.data();
            f.context.uc_stack.ss_size = f.stack.size();
            f.context.uc_link = &fr_emu_scheduler;
            makecontext(&f.context, fr_emu_fiber_main, 0);
            f.done = false;
            f.phase = 0;
        }
        for (bool running = true; running;) {   // one round per barrier
            running = false;
            for (int t = 0; t < block; ++t) {
                if (fr_emu_fibers[t].done) continue;
                fr_emu_current = t;
                threadIdx = {(unsigned)t, 0, 0};
                swapcontext(&fr_emu_scheduler, &fr_emu_fibers[t].context);
                running = true;
            }
        }
    }
    fr_emu_current = -1;
    return fr_emu_error ? -1 : 0;
}

#endif  // FASTRANK_HOST_EMULATION_CUH
