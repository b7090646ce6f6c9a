package ocf

// lineList is a doubly linked list of lines threaded through line.prev and
// line.next: the free list, and the clean and dirty LRU lists (most recently
// used at the head, eviction and cleaning candidates at the tail). Lists
// and the links they thread are guarded by Cache.mu; the lock-free hit
// path never reads them (it marks its line referenced instead of moving
// it, see allocLocked).
type lineList struct {
	head, tail lineIdx
	n          int
}

func newLineList() lineList { return lineList{head: noLine, tail: noLine} }

// lists holds the three lists of a cache, indexed by listID.
type lists [numLists]lineList

func (ls *lists) init() {
	for i := range ls {
		ls[i] = newLineList()
	}
}

// pushFront puts line i, which is on no list, at the head of list id.
func (ls *lists) pushFront(lines []line, id listID, i lineIdx) {
	l := &ls[id]
	ln := &lines[i]
	ln.setList(id)
	ln.prev, ln.next = noLine, l.head
	if l.head != noLine {
		lines[l.head].prev = i
	} else {
		l.tail = i
	}
	l.head = i
	l.n++
}

// pushBack puts line i, which is on no list, at the tail of list id.
func (ls *lists) pushBack(lines []line, id listID, i lineIdx) {
	l := &ls[id]
	ln := &lines[i]
	ln.setList(id)
	ln.next, ln.prev = noLine, l.tail
	if l.tail != noLine {
		lines[l.tail].next = i
	} else {
		l.head = i
	}
	l.tail = i
	l.n++
}

// remove takes line i off its list.
func (ls *lists) remove(lines []line, i lineIdx) {
	ln := &lines[i]
	l := &ls[ln.list()]
	if ln.prev != noLine {
		lines[ln.prev].next = ln.next
	} else {
		l.head = ln.next
	}
	if ln.next != noLine {
		lines[ln.next].prev = ln.prev
	} else {
		l.tail = ln.prev
	}
	ln.prev, ln.next = noLine, noLine
	l.n--
}

// moveToFront moves line i to the head of list id (its own list, for an LRU
// touch, or another one when it turns clean or dirty).
func (ls *lists) moveToFront(lines []line, id listID, i lineIdx) {
	if lines[i].list() == id && ls[id].head == i {
		return
	}
	ls.remove(lines, i)
	ls.pushFront(lines, id, i)
}
