//! One conformance suite, run against every backend: memory, a local directory, and each server
//! the environment names (see `tests/support`). Each case is a plain async function taking a
//! backend; `conformance!` makes one test per case and backend, so a failure names both.

#[path = "../support/mod.rs"]
mod support;

mod cases;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $( conformance!(@case $case: memory, local, s3s, moto, garage, seaweedfs, s3, gcs, azure, http); )*
    };
    (@case $case:ident: $($backend:ident),*) => {
        mod $case {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $backend() {
                    crate::support::run(stringify!($backend), stringify!($case), crate::cases::$case).await;
                }
            )*
        }
    };
}

conformance!(
    uri_round_trips,
    stat_reports_size_and_etag,
    ranged_read_equals_slice_of_full_read,
    missing_object_is_not_found_naming_the_uri,
    list_under_a_prefix,
    put_get_delete_round_trip,
    parallel_download_equals_sequential,
    object_replaced_mid_download_is_detected,
    safetensors_lazy_reads_cost_one_get_each,
    safetensors_large_write_reads_back,
    gguf_lazy_reads_cost_one_get_each,
    orbax_lazy_reads_cost_one_get_per_chunk,
    orbax_chunks_of_one_array_come_in_one_request,
    create_only_put_keeps_the_first_object,
    torch_write_reads_back_and_replaces_whole_or_not_at_all,
    torch_zip_tail_is_read_with_or_without_suffix_ranges,
    odd_names_are_walked_copied_and_removed_as_they_are,
);
