//! Reads structured choices out of fuzz bytes: the structure-aware targets (the turn engine's
//! action sequences, HTTP requests) draw their shape from the input, defaulting once it runs out.

/// A cursor over fuzz input; every read succeeds (zeros past the end).
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn i64(&mut self) -> i64 {
        let lo = u64::from(self.u32());
        let hi = u64::from(self.u32());
        (hi << 32 | lo) as i64
    }

    /// Mostly small IDs (so results meet the events they answer), sometimes anything.
    pub fn id(&mut self) -> i32 {
        match self.u8() {
            0..=239 => i32::from(self.u8() % 8) - 1,
            240..=249 => self.u32() as i32,
            _ => i32::MAX,
        }
    }

    /// A length-prefixed byte string (length from one byte).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }

    /// A string: one of a few names the scenario refers to, or raw (lossy UTF-8) bytes.
    pub fn string(&mut self, names: &[&str]) -> String {
        let k = self.below(names.len() + 1);
        match names.get(k) {
            Some(s) => s.to_string(),
            None => String::from_utf8_lossy(self.bytes()).into_owned(),
        }
    }

    /// The bytes not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero_and_strings_are_bounded() {
        let mut i = Input::new(&[3, b'a', b'b']);
        assert_eq!(i.bytes(), b"ab");
        assert!(i.is_empty());
        assert_eq!(i.u32(), 0);
        assert_eq!(i.bytes(), b"");
    }
}
