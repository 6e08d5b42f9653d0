pub mod softhsm;
pub mod standin;
