//! jemalloc starts with the `voltex` binary's options: a binary that invokes
//! `voltex::install_malloc_conf!()`, as `main.rs` and the memory example do, gets
//! one-page slabs for the small size classes that hold a simulated device's blocks,
//! and jemalloc's default slabs above 512 B (`voltex::allocator`).
#![cfg(not(target_env = "msvc"))]

use voltex::allocator::slab_bytes;

voltex::install_malloc_conf!();

fn page_bytes() -> usize {
    // SAFETY: `arenas.page` is a `size_t`, read as `usize`.
    unsafe { tikv_jemalloc_ctl::raw::read(b"arenas.page\0") }.expect("jemalloc answers")
}

#[test]
fn small_size_classes_get_one_page_slabs_and_larger_ones_keep_the_default() {
    let page = page_bytes();
    // The blocks a simulated device holds or churns: device id, records, acks, outbox,
    // its schedule (160 B), the outbox at three entries (192 B); and the range's ends.
    for block_bytes in [8, 24, 48, 64, 80, 96, 128, 160, 192, 256, 512] {
        assert_eq!(
            slab_bytes(block_bytes).expect("jemalloc answers"),
            Some(page),
            "the class of a {block_bytes}-B block"
        );
    }
    // jemalloc's default slab is the least common multiple of page and block size:
    // 640-B blocks fill five pages exactly, where one page would waste 256 B.
    let slab_640 = slab_bytes(640)
        .expect("jemalloc answers")
        .expect("a slab class");
    assert!(
        slab_640 > page && slab_640.is_multiple_of(640),
        "a 640-B block keeps the default slab, got {slab_640} B"
    );
}
