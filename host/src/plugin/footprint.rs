//! A component's static footprint, read with wasmparser before compiling:
//! how many core instances, linear memories and tables one instance of it
//! creates, and the largest memory and table it declares at start. These
//! are the smallest `max_instances`, `max_memory_bytes` and
//! `max_table_elements` it can run under (`enrichd plugin inspect` prints
//! them), and `PluginEngine::load` refuses a plugin whose limits are below
//! them with one message, whichever allocator is in use, instead of
//! compiling it for seconds to fail every call (on-demand) or to be refused
//! by the pooling allocator as "not a valid component".
//!
//! The counts mirror what wasmtime 48 counts at instantiation (the store's
//! `bump_resource_counts` and the pooling allocator's
//! `validate_component`): one core instance per module instantiation in
//! the flattened component, the memories and tables that module defines
//! (imported ones are someone else's). Nested components count once per
//! instantiation of them. Exact for the flat components `wasm32-wasip2`
//! Rust, componentize-py and ComponentizeJS produce; for a component
//! composed from others whose calls cross between them, wasmtime also
//! instantiates adapter modules this count does not see (the pooling
//! allocator still refuses those with the same message, see `engine`).

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind,
    ComponentTypeRef, Instance, Parser, Payload, TypeRef,
};

use super::policy::Limits;

/// What one instance of a component needs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Footprint {
    /// Core module instances created.
    pub core_instances: u64,
    /// Linear memories defined by those instances.
    pub memories: u64,
    /// Tables defined by those instances.
    pub tables: u64,
    /// The largest initial linear memory any core module declares (defined
    /// or imported), in bytes.
    pub memory_bytes: u64,
    /// The largest initial table any core module declares, in elements.
    pub table_elements: u64,
}

/// Counts of one instantiation (of a module or a component).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    core_instances: u64,
    memories: u64,
    tables: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.core_instances = self.core_instances.saturating_add(o.core_instances);
        self.memories = self.memories.saturating_add(o.memories);
        self.tables = self.tables.saturating_add(o.tables);
    }
}

/// A module or component being read, with its index spaces (what an
/// instantiation of each entry costs).
#[derive(Default)]
struct Frame {
    /// A core module: the memories and tables it defines.
    module: Counts,
    /// A component: its core module index space…
    modules: Vec<Counts>,
    /// …its component index space…
    components: Vec<Counts>,
    /// …and what instantiating it creates.
    instantiated: Counts,
    is_module: bool,
}

impl Footprint {
    /// The smallest `max_instances` this component runs under: the store
    /// limiter uses it for core instances, memories and tables alike.
    pub fn min_instances(&self) -> u64 {
        self.core_instances.max(self.memories).max(self.tables)
    }

    /// Read the footprint of `wasm` (a component, or a core module).
    pub fn of(wasm: &[u8]) -> wasmparser::Result<Footprint> {
        let mut f = Footprint::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut outermost = Counts::default();
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Payload::Version { encoding, .. } = payload {
                stack.push(Frame {
                    is_module: encoding == wasmparser::Encoding::Module,
                    ..Frame::default()
                });
                continue;
            }
            if let Payload::End(_) = payload {
                let Some(done) = stack.pop() else { continue };
                let cost = if done.is_module {
                    done.module
                } else {
                    done.instantiated
                };
                match stack.last_mut() {
                    Some(parent) if done.is_module => parent.modules.push(cost),
                    Some(parent) => parent.components.push(cost),
                    None if done.is_module => {
                        outermost = Counts {
                            core_instances: 1,
                            ..cost
                        }
                    }
                    None => outermost = cost,
                }
                continue;
            }
            f.read(&payload, &mut stack)?;
        }
        f.core_instances = outermost.core_instances;
        f.memories = outermost.memories;
        f.tables = outermost.tables;
        Ok(f)
    }

    /// One section of the frame on top of `stack`.
    fn read(&mut self, payload: &Payload<'_>, stack: &mut [Frame]) -> wasmparser::Result<()> {
        let depth = stack.len();
        if depth == 0 {
            return Ok(());
        }
        let frame = &mut stack[depth - 1];
        match payload {
            Payload::MemorySection(memories) => {
                frame.module.memories += u64::from(memories.count());
                for m in memories.clone() {
                    self.memory(m?);
                }
            }
            Payload::TableSection(tables) => {
                frame.module.tables += u64::from(tables.count());
                for t in tables.clone() {
                    self.table(t?.ty);
                }
            }
            Payload::ImportSection(imports) => {
                for import in imports.clone().into_imports() {
                    match import?.ty {
                        TypeRef::Memory(m) => self.memory(m),
                        TypeRef::Table(t) => self.table(t),
                        _ => {}
                    }
                }
            }
            Payload::InstanceSection(instances) => {
                for instance in instances.clone() {
                    if let Instance::Instantiate { module_index, .. } = instance? {
                        let module = frame.modules.get(module_index as usize).copied();
                        frame.instantiated.add(Counts {
                            core_instances: 1,
                            ..module.unwrap_or_default()
                        });
                    }
                }
            }
            Payload::ComponentInstanceSection(instances) => {
                for instance in instances.clone() {
                    if let ComponentInstance::Instantiate {
                        component_index, ..
                    } = instance?
                    {
                        let nested = frame.components.get(component_index as usize).copied();
                        frame.instantiated.add(nested.unwrap_or_default());
                    }
                }
            }
            Payload::ComponentAliasSection(aliases) => {
                for alias in aliases.clone() {
                    match alias? {
                        ComponentAlias::Outer { kind, count, index } => {
                            // `count` 0 is this component, 1 its parent…
                            let outer = depth.checked_sub(1 + count as usize).map(|i| &stack[i]);
                            let (space, is_module) = match kind {
                                ComponentOuterAliasKind::CoreModule => {
                                    (outer.map(|o| &o.modules), true)
                                }
                                ComponentOuterAliasKind::Component => {
                                    (outer.map(|o| &o.components), false)
                                }
                                _ => continue,
                            };
                            let cost = space
                                .and_then(|s| s.get(index as usize))
                                .copied()
                                .unwrap_or_default();
                            push(&mut stack[depth - 1], is_module, cost);
                        }
                        // A module or component exported by an instance:
                        // not knowable here (none of the toolchains emits it).
                        ComponentAlias::InstanceExport { kind, .. } => {
                            push_kind(&mut stack[depth - 1], kind, None)
                        }
                        ComponentAlias::CoreInstanceExport { .. } => {}
                    }
                }
            }
            Payload::ComponentImportSection(imports) => {
                for import in imports.clone() {
                    match import?.ty {
                        ComponentTypeRef::Module(_) => frame.modules.push(Counts::default()),
                        ComponentTypeRef::Component(_) => frame.components.push(Counts::default()),
                        _ => {}
                    }
                }
            }
            // An export of a module or component adds it to its index space again.
            Payload::ComponentExportSection(exports) => {
                for export in exports.clone() {
                    let export = export?;
                    push_kind(frame, export.kind, Some(export.index));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn memory(&mut self, m: wasmparser::MemoryType) {
        let page = 1u64 << m.page_size_log2.unwrap_or(16).min(16);
        self.memory_bytes = self.memory_bytes.max(m.initial.saturating_mul(page));
    }

    fn table(&mut self, t: wasmparser::TableType) {
        self.table_elements = self.table_elements.max(t.initial);
    }

    /// The first limit of `limits` this footprint does not fit, as the
    /// error an operator reads after `plugin "name": `.
    pub fn check(&self, limits: &Limits) -> Result<(), BelowFootprint> {
        let below = |needs: String, limit: &'static str, value: u64| {
            Err(BelowFootprint {
                needs,
                limit,
                value,
            })
        };
        let instances = limits.max_instances as u64;
        let counts = [
            (self.core_instances, "core instances"),
            (self.memories, "linear memories"),
            (self.tables, "tables"),
        ];
        for (n, what) in counts {
            if n > instances {
                return below(format!("{n} {what}"), "max_instances", instances);
            }
        }
        if self.memory_bytes > limits.max_memory_bytes as u64 {
            return below(
                format!("a linear memory of {} bytes at start", self.memory_bytes),
                "max_memory_bytes",
                limits.max_memory_bytes as u64,
            );
        }
        if self.table_elements > limits.max_table_elements as u64 {
            return below(
                format!("a table of {} elements at start", self.table_elements),
                "max_table_elements",
                limits.max_table_elements as u64,
            );
        }
        Ok(())
    }
}

/// A limit below what a component needs to be instantiated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its component needs {needs}, above {limit} = {value}; raise {limit} for this plugin")]
pub struct BelowFootprint {
    /// What it needs, e.g. "14 core instances".
    pub needs: String,
    /// The limit's config key.
    pub limit: &'static str,
    /// The limit's value.
    pub value: u64,
}

fn push(frame: &mut Frame, is_module: bool, cost: Counts) {
    if is_module {
        frame.modules.push(cost);
    } else {
        frame.components.push(cost);
    }
}

/// Add an entry of `kind` to `frame`'s index space: a copy of entry `index`
/// (an export), or an unknown one.
fn push_kind(frame: &mut Frame, kind: ComponentExternalKind, index: Option<u32>) {
    let copy = |space: &[Counts]| index.and_then(|i| space.get(i as usize)).copied();
    match kind {
        ComponentExternalKind::Module => {
            let cost = copy(&frame.modules).unwrap_or_default();
            frame.modules.push(cost);
        }
        ComponentExternalKind::Component => {
            let cost = copy(&frame.components).unwrap_or_default();
            frame.components.push(cost);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module with one memory of `memory` pages and one table of
    /// `table` elements (none when 0).
    fn module(memory: u8, table: u8) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        if table > 0 {
            // Table section: one funcref table, min `table`.
            m.extend_from_slice(&[4, 4, 1, 0x70, 0, table]);
        }
        if memory > 0 {
            // Memory section: one memory, min `memory` pages.
            m.extend_from_slice(&[5, 3, 1, 0, memory]);
        }
        m
    }

    /// A component of `sections` (id, contents).
    fn component(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        for (id, body) in sections {
            c.push(*id);
            c.push(u8::try_from(body.len()).expect("small section"));
            c.extend_from_slice(body);
        }
        c
    }

    const CORE_MODULE: u8 = 1;
    const CORE_INSTANCES: u8 = 2;
    const COMPONENT: u8 = 4;
    const COMPONENT_INSTANCES: u8 = 5;
    const ALIASES: u8 = 6;

    /// Instantiate each module (or component) index, with no arguments.
    fn instantiate(indices: &[u8]) -> Vec<u8> {
        let mut s = vec![indices.len() as u8];
        for &i in indices {
            s.extend_from_slice(&[0, i, 0]);
        }
        s
    }

    #[test]
    fn issue_16_declared_sizes_are_read_from_every_core_module_defined_or_imported() {
        let f = Footprint::of(&module(3, 7)).unwrap();
        assert_eq!((f.memory_bytes, f.table_elements), (3 << 16, 7));
        assert_eq!((f.core_instances, f.memories, f.tables), (1, 1, 1));
        // A module importing "m" "mem" (memory, min 100 pages).
        let mut importer = b"\0asm\x01\0\0\0".to_vec();
        importer.extend_from_slice(&[2, 10, 1, 1, b'm', 3, b'm', b'e', b'm', 2, 0, 100]);
        let c = component(&[(CORE_MODULE, module(3, 7)), (CORE_MODULE, importer)]);
        let f = Footprint::of(&c).unwrap();
        assert_eq!((f.memory_bytes, f.table_elements), (100 << 16, 7));
        assert_eq!(f.core_instances, 0, "modules never instantiated");
    }

    /// Every module instantiation counts with what the module defines; a
    /// bundle of exports is no instance; nested components count once per
    /// instantiation, also through an outer alias of a module.
    #[test]
    fn issue_16_counts_follow_instantiations_through_nested_components() {
        let nested = component(&[
            (CORE_MODULE, module(1, 0)),
            (CORE_INSTANCES, instantiate(&[0])),
        ]);
        // Aliases the outer component's module 0 (`count` 1) and
        // instantiates it.
        let aliasing = component(&[
            (ALIASES, vec![1, 0x00, 0x11, 0x02, 1, 0]),
            (CORE_INSTANCES, instantiate(&[0])),
        ]);
        let mut core_instances = instantiate(&[0, 1, 0]);
        core_instances[0] += 1;
        core_instances.extend_from_slice(&[1, 0]); // FromExports, no exports
        let c = component(&[
            (CORE_MODULE, module(1, 2)),
            (CORE_MODULE, module(0, 0)),
            (CORE_INSTANCES, core_instances),
            (COMPONENT, nested),
            (COMPONENT, aliasing),
            (COMPONENT_INSTANCES, instantiate(&[0, 0, 1])),
        ]);
        let f = Footprint::of(&c).unwrap();
        // Top: A, B, A (2 memories, 2 tables); nested twice (2 memories);
        // aliasing once (A again).
        assert_eq!((f.core_instances, f.memories, f.tables), (6, 5, 3), "{f:?}");
        assert_eq!(f.min_instances(), 6);
    }

    #[test]
    fn issue_16_limits_below_the_footprint_name_the_limit_and_the_need() {
        let f = Footprint {
            core_instances: 14,
            memories: 1,
            tables: 2,
            memory_bytes: 3 << 20,
            table_elements: 5680,
        };
        let fits = Limits {
            max_instances: 14,
            max_memory_bytes: 3 << 20,
            max_table_elements: 5680,
            ..Limits::default()
        };
        assert_eq!(f.check(&fits), Ok(()));
        let refused = |limits: Limits| f.check(&limits).unwrap_err().to_string();
        assert_eq!(
            refused(Limits {
                max_instances: 8,
                ..fits
            }),
            "its component needs 14 core instances, above max_instances = 8; raise max_instances for this plugin"
        );
        assert_eq!(
            refused(Limits {
                max_memory_bytes: 2 << 20,
                ..fits
            }),
            "its component needs a linear memory of 3145728 bytes at start, above max_memory_bytes = 2097152; raise max_memory_bytes for this plugin"
        );
        assert_eq!(
            refused(Limits {
                max_table_elements: 5679,
                ..fits
            }),
            "its component needs a table of 5680 elements at start, above max_table_elements = 5679; raise max_table_elements for this plugin"
        );
    }
}
