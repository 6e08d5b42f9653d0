//! Fuzzes the RFC 7512 `pkcs11:` URI parser: no input may panic it, and whatever parses must
//! print to a canonical form that parses back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p11jwt::uri::Pkcs11Uri;

fuzz_target!(|data: &[u8]| {
    // Arbitrary bytes: used as is when they are UTF-8, replacement characters otherwise.
    check(&String::from_utf8_lossy(data));
});

fn check(input: &str) {
    let Ok(uri) = Pkcs11Uri::parse(input) else {
        return;
    };
    let printed = uri.to_string();
    let again = match Pkcs11Uri::parse(&printed) {
        Ok(again) => again,
        Err(e) => panic!("{input:?} printed as {printed:?}, which does not parse: {e}"),
    };

    // Printing drops pin-value (a secret) and the ignored x- attributes; nothing else.
    let mut expected = uri.clone();
    expected.pin_value = None;
    expected.ignored_vendor.clear();
    assert_eq!(again, expected, "{input:?} printed as {printed:?}");
    assert_eq!(again.to_string(), printed, "printing is not canonical");
}
