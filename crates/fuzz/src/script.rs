//! Reading a fuzz input as a script: numbers and chunks taken from the front.

/// The rest of an input, read from the front. Running out yields zeros and empty chunks, so a
/// target never has to check lengths.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    /// A script over `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next byte (0 when none is left).
    pub fn byte(&mut self) -> u8 {
        let Some((&first, rest)) = self.rest.split_first() else {
            return 0;
        };
        self.rest = rest;
        first
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// The next `len` bytes (fewer when fewer are left).
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (chunk, rest) = self.rest.split_at(len.min(self.rest.len()));
        self.rest = rest;
        chunk
    }

    /// A chunk whose length is the next byte.
    pub fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte());
        self.take(len)
    }

    /// Everything left.
    pub fn remainder(&mut self) -> &'a [u8] {
        self.take(self.rest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_reads_from_the_front_and_runs_out_gently() {
        let mut script = Script::new(&[2, 0xaa, 0xbb, 0xcc, 1]);
        assert_eq!(script.chunk(), &[0xaa, 0xbb]);
        assert_eq!(script.u16(), 0xcc01);
        assert!(script.is_empty());
        assert_eq!(script.byte(), 0);
        assert_eq!(script.chunk(), &[] as &[u8]);
        let mut short = Script::new(&[5, 1]);
        assert_eq!(short.chunk(), &[1]);
    }
}
