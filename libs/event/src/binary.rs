//! The binary values our streams carry: a string is its length as an
//! unsigned LEB128 number, then its bytes; numbers are little-endian.
//! (ClickHouse's RowBinary reads strings the same way.)

/// Why bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("cut short")]
    Truncated,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("string length longer than five bytes")]
    LongLength,
    #[error("{0} bytes after the end")]
    Trailing(usize),
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: u8 },
}

/// Appends a length as unsigned LEB128.
pub fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends a string: its length, then its bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Reads values off the front of a slice.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(bytes)
    }

    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        self.0
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], BinaryError> {
        if self.0.len() < n {
            return Err(BinaryError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// A length. At most five groups of seven bits: every length a stream
    /// entry can hold, read the same by ClickHouse (which takes up to nine).
    pub fn length(&mut self) -> Result<usize, BinaryError> {
        let mut len = 0usize;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            len |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(len);
            }
        }
        Err(BinaryError::LongLength)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], BinaryError> {
        let len = self.length()?;
        self.take(len)
    }

    pub fn str(&mut self) -> Result<&'a str, BinaryError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| BinaryError::NotUtf8)
    }

    pub fn string(&mut self) -> Result<String, BinaryError> {
        self.str().map(str::to_owned)
    }

    pub fn byte(&mut self) -> Result<u8, BinaryError> {
        Ok(self.take(1)?[0])
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], BinaryError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, BinaryError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, BinaryError> {
        self.array().map(i64::from_le_bytes)
    }

    pub fn f64(&mut self) -> Result<f64, BinaryError> {
        self.array().map(f64::from_le_bytes)
    }

    /// Done: nothing may be left.
    pub fn end(self) -> Result<(), BinaryError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(BinaryError::Trailing(n)),
        }
    }
}
