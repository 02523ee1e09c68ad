//! Intel AMX (Advanced Matrix Extensions) tiles: the bf16 and int8 matrix units of Sapphire Rapids and
//! later Xeons, which multiply 16 x 32 bf16 (or 16 x 64 int8) tiles at 16 (32) times the rate of
//! AVX-512 FMAs. Rust has no stable AMX intrinsics, so the few instructions used are inline assembly.
//!
//! The kernels here compute one 32 x 32 block of `C = A B` from operands laid out the way the tile
//! loads want them: `A` row-major (32 rows, `k` contiguous), `B` pre-packed by
//! [`crate::kernels::packed_layout`] into 1 KiB tiles (16 rows of k-pairs or k-quads x 16 columns). The
//! four accumulator tiles (2 x 2) stay in tile registers for the whole `k` loop.
//!
//! Linux hands out the tile state per process on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and each
//! thread must load a tile configuration before its first tile instruction: [`with_tiles`] does both.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

use crate::kernels::cpu;

/// Rows (and 32-bit columns) of a tile, and bytes per tile row.
pub const TILE_ROWS: usize = 16;
pub const TILE_BYTES_PER_ROW: usize = 64;
/// Bytes of one tile.
pub const TILE_BYTES: usize = TILE_ROWS * TILE_BYTES_PER_ROW;
/// Rows and columns of the output block one kernel call computes.
pub const BLOCK: usize = 2 * TILE_ROWS;

/// Whether the CPU has AMX tiles with bf16 and int8 and the kernel lets this process use them (see
/// [`cpu::amx_wanted`] for the switch that turns them off).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu::amx_wanted() && request_tiles())
}

/// Asks Linux for the tile-data state for this process (needed once, before any thread uses tiles).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these two integer arguments only changes this process's permissions;
    // it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tiles() -> bool {
    false
}

/// The `ldtilecfg` operand: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Runs `work` with this thread's tiles configured, releasing them after (so that a context switch
/// need not save them). Callers must have checked [`available`].
pub fn with_tiles<T>(work: impl FnOnce() -> T) -> T {
    debug_assert!(available());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AMX and the process may use it (`available`, asserted above); CONFIG is a
    // valid 64-byte tile configuration that lives for the whole program.
    unsafe {
        asm!("ldtilecfg [{0}]", in(reg) &CONFIG as *const TileConfig, options(nostack));
    }
    let out = work();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: tiles were configured above on this thread; releasing them touches no memory.
    unsafe {
        asm!("tilerelease", options(nostack, nomem));
    }
    out
}

/// Which dot-product instruction a kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileOp {
    /// `tdpbf16ps`: bf16 pairs, f32 accumulators.
    Bf16,
    /// `tdpbusd`: quads of unsigned (A) by signed (B) int8, i32 accumulators.
    Int8,
}

/// One 32 x 32 block: `out = A B` over `k_tiles` steps of one tile's depth (32 bf16 or 64 int8).
///
/// `a` points at the block's first row, rows `a_stride` bytes apart, `k` contiguous. `b0` and `b1` point
/// at the packed tiles of the block's two 16-column halves, each `k_tiles` consecutive 1 KiB tiles.
/// `out` receives 32 rows of 32 four-byte values (f32 or i32), row after row.
///
/// # Safety
/// The pointers must cover what is described, tiles must be configured ([`with_tiles`]), and the CPU
/// must have AMX ([`available`]).
#[cfg(target_arch = "x86_64")]
pub unsafe fn block(
    op: TileOp,
    a: *const u8,
    a_stride: usize,
    b0: *const u8,
    b1: *const u8,
    k_tiles: usize,
    out: &mut [u32; BLOCK * BLOCK],
) {
    // SAFETY: the caller guarantees what this function requires: the CPU features it is compiled
    // for, and pointers and lengths inside the buffers they name.
    unsafe {
        let a_lower = a.add(TILE_ROWS * a_stride);
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for t in 0..k_tiles {
            let k_offset = t * TILE_BYTES_PER_ROW;
            let tile_offset = t * TILE_BYTES;
            asm!(
                "tileloadd tmm4, [{a} + {stride}]",
                "tileloadd tmm5, [{al} + {stride}]",
                "tileloadd tmm6, [{b0} + {packed}]",
                "tileloadd tmm7, [{b1} + {packed}]",
                a = in(reg) a.add(k_offset),
                al = in(reg) a_lower.add(k_offset),
                b0 = in(reg) b0.add(tile_offset),
                b1 = in(reg) b1.add(tile_offset),
                stride = in(reg) a_stride,
                packed = in(reg) TILE_BYTES_PER_ROW,
                options(nostack, readonly)
            );
            match op {
                TileOp::Bf16 => asm!(
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                ),
                TileOp::Int8 => asm!(
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    options(nostack, nomem)
                ),
            }
        }
        let out = out.as_mut_ptr() as *mut u8;
        let half = TILE_ROWS * BLOCK * 4; // the lower two tiles start 16 rows down
        asm!(
            "tilestored [{o} + {stride}], tmm0",
            "tilestored [{o1} + {stride}], tmm1",
            "tilestored [{o2} + {stride}], tmm2",
            "tilestored [{o3} + {stride}], tmm3",
            o = in(reg) out,
            o1 = in(reg) out.add(TILE_BYTES_PER_ROW),
            o2 = in(reg) out.add(half),
            o3 = in(reg) out.add(half + TILE_BYTES_PER_ROW),
            stride = in(reg) BLOCK * 4,
            options(nostack)
        );
    }
}
