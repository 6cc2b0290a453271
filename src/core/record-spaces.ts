/**
 * The record spaces of groups and elections, named and read in this one place: a group's
 * members live in `group/<id>`, an election's leader in `election/<id>`.
 *
 * @module
 */

/** The record space of group `id`. */
export function groupSpace(id: string): string {
  return `group/${id}`;
}

/** The record space of election `id`. */
export function electionSpace(id: string): string {
  return `election/${id}`;
}

/** What a record space belongs to, or `null` for any other space. */
export function spaceOwner(space: string): { readonly kind: "group" | "election"; readonly id: string } | null {
  for (const kind of ["group", "election"] as const) {
    if (space.startsWith(`${kind}/`)) return { kind, id: space.slice(kind.length + 1) };
  }
  return null;
}
