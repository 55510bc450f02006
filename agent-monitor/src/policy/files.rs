//! The files dimension: deny first, then the read/write allow-lists and the baseline.

use globset::Candidate;

use super::{CompiledPolicy, Dimension, FileAccess, Verdict};

/// What is being done to one path, for rule lookup and the violation's wording.
#[derive(Clone, Copy)]
enum Op {
    Access(FileAccess),
    RenameFrom,
    RenameTo,
    LinkFrom,
    LinkTo,
}

impl Op {
    fn needs_write(self) -> bool {
        !matches!(
            self,
            Self::Access(FileAccess::Read | FileAccess::List) | Self::LinkFrom
        )
    }

    fn describe(self, path: &str) -> String {
        match self {
            Self::Access(access) => format!("{access} of {path}"),
            Self::RenameFrom => format!("rename from {path}"),
            Self::RenameTo => format!("rename to {path}"),
            Self::LinkFrom => format!("hard link of {path}"),
            Self::LinkTo => format!("hard link as {path}"),
        }
    }
}

impl CompiledPolicy {
    pub(super) fn judge_file(&self, path: &str, access: FileAccess, tgid: u32) -> Verdict {
        let candidate = Candidate::new(path);
        let op = Op::Access(access);
        self.denied(path, &candidate, op)
            .and_then(|| self.permitted(path, &candidate, op, tgid))
    }

    /// Deny is checked on both ends before either end's allow-list, so a rename touching
    /// a denied path is always reported as such.
    pub(super) fn judge_rename(&self, from: &str, to: &str, tgid: u32) -> Verdict {
        let (from_c, to_c) = (Candidate::new(from), Candidate::new(to));
        self.denied(from, &from_c, Op::RenameFrom)
            .and_then(|| self.denied(to, &to_c, Op::RenameTo))
            .and_then(|| self.permitted(from, &from_c, Op::RenameFrom, tgid))
            .and_then(|| self.permitted(to, &to_c, Op::RenameTo, tgid))
    }

    /// A path the daemon could not name exactly (its directory was gone): only a deny
    /// entry its own name matches, whatever directory it is in, makes it a violation; a
    /// guess never does.
    pub(crate) fn judge_unresolved(&self, path: &str, access: FileAccess) -> Verdict {
        self.denied(path, &Candidate::new(path), Op::Access(access))
    }

    /// A new name for a file reaches what the file itself may be used for: the file must
    /// be readable and the new name creatable (writing through it is judged at its open).
    pub(super) fn judge_link(&self, from: &str, to: &str, tgid: u32) -> Verdict {
        let (from_c, to_c) = (Candidate::new(from), Candidate::new(to));
        self.denied(from, &from_c, Op::LinkFrom)
            .and_then(|| self.denied(to, &to_c, Op::LinkTo))
            .and_then(|| self.permitted(from, &from_c, Op::LinkFrom, tgid))
            .and_then(|| self.permitted(to, &to_c, Op::LinkTo, tgid))
    }

    fn denied(&self, path: &str, candidate: &Candidate<'_>, op: Op) -> Verdict {
        // `is_match` first: the indexed lookup allocates, and only violations need it.
        if !self.deny.is_match(candidate) {
            return Verdict::Allowed;
        }
        let index = self.deny.first_match(candidate).unwrap_or_default();
        let pattern = self
            .declared
            .files
            .deny
            .get(index)
            .map_or("", String::as_str);
        Verdict::violation(
            Dimension::Files,
            format!("files.deny[{index}]: {pattern}"),
            format!("{} is denied by files.deny", op.describe(path)),
        )
    }

    fn permitted(&self, path: &str, candidate: &Candidate<'_>, op: Op, tgid: u32) -> Verdict {
        let baseline = self.baseline.as_ref();
        if op.needs_write() {
            if self.write.is_match(candidate) || baseline.is_some_and(|b| b.allows_write(candidate))
            {
                return Verdict::Allowed;
            }
            return Verdict::violation(
                Dimension::Files,
                "files.write",
                format!("{} is not in files.write", op.describe(path)),
            );
        }
        // Writable implies readable; readable implies listable. A program exec.allow names
        // may be read (an interpreter reads the script it runs).
        if self.read.is_match(candidate)
            || self.write.is_match(candidate)
            || self.exec.is_match(candidate)
            || baseline.is_some_and(|b| b.allows_read(path, candidate, tgid))
            || (matches!(op, Op::Access(FileAccess::List)) && self.list.is_match(candidate))
        {
            return Verdict::Allowed;
        }
        let lists = match (
            baseline.is_some(),
            matches!(op, Op::Access(FileAccess::List)),
        ) {
            (true, true) => "files.read, files.write, files.list or the baseline",
            (true, false) => "files.read, files.write or the baseline",
            (false, true) => "files.read, files.write or files.list (baseline off)",
            (false, false) => "files.read or files.write (baseline off)",
        };
        Verdict::violation(
            Dimension::Files,
            "files.read",
            format!("{} is not in {lists}", op.describe(path)),
        )
    }
}
