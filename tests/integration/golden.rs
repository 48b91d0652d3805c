//! Golden vectors written by NumPy + zstandard (`tests/data/make_golden.py`) decode in Rust bit
//! for bit.

use std::path::PathBuf;

use ndbridge::wire::{decode, Limits};
use serde_json::Value;

#[test]
fn numpy_written_messages_decode_bit_exactly() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 50,
        "expected the full matrix, found {} cases",
        cases.len()
    );
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let frames = crate::common::read_frames(&dir.join(case["file"].as_str().unwrap()));
        let record =
            decode(&frames, &Limits::default()).unwrap_or_else(|e| panic!("case {name}: {e}"));
        let expected_arrays = case["arrays"].as_array().unwrap();
        assert_eq!(record.arrays.len(), expected_arrays.len(), "case {name}");
        for expected in expected_arrays {
            let array_name = expected["name"].as_str().unwrap();
            let array = record
                .array(array_name)
                .unwrap_or_else(|| panic!("case {name}: no array {array_name}"));
            let dtype: ndbridge::wire::DType = expected["dtype"].as_str().unwrap().parse().unwrap();
            assert_eq!(array.dtype(), dtype, "case {name}");
            let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).unwrap();
            assert_eq!(array.shape(), &shape[..], "case {name}");
            let bin = std::fs::read(dir.join(expected["expected"].as_str().unwrap())).unwrap();
            assert!(
                crate::common::c_order_le_bytes(array) == bin,
                "case {name}, array {array_name}: values differ"
            );
        }
    }
}
