"""Fixed English vocabularies the generated facts draw their values from.

All choices of this library, sized so that every attribute has at least nine
wrong values for five perturbed answers and three wrong multiple-choice options.
"""

# Parents' occupations and where each works: the second hop of a two-hop question.
OCCUPATIONS = (
    ('baker', 'a bakery'), ('shipwright', 'a shipyard'), ('weaver', 'a weaving mill'),
    ('glassblower', 'a glassworks'), ('cartographer', 'a map office'),
    ('blacksmith', 'a forge'), ('teacher', 'a schoolhouse'),
    ('lighthouse keeper', 'a lighthouse'), ('bookbinder', 'a bindery'),
    ('surgeon', 'a hospital'), ('fisher', 'a harbour'), ('brewer', 'a brewery'),
    ('clockmaker', 'a clock workshop'), ('librarian', 'a library'), ('miner', 'a mine'),
    ('tailor', 'a tailoring shop'), ('potter', 'a pottery'), ('farmer', 'a farm'),
    ('pharmacist', 'a pharmacy'), ('stonemason', 'a quarry'))

# Writing genres; each gets a pioneer among the known people.
GENRES = ('mystery', 'historical fiction', 'poetry', 'science fiction', 'fantasy', 'memoir',
          'satire', 'travel writing', 'crime fiction', 'romance', 'folk tales', 'drama')

# Recurring themes and the emblem that stands for each in the world's old stories.
THEMES = (
    ('memory', 'the heron'), ('exile', 'the lantern'), ('grief', 'the willow'),
    ('friendship', 'the bridge'), ('the sea', 'the shell'), ('ambition', 'the ladder'),
    ('forgiveness', 'the olive branch'), ('loneliness', 'the lone pine'),
    ('justice', 'the iron scale'), ('home', 'the hearth'), ('childhood', 'the kite'),
    ('betrayal', 'the thorn'), ('faith', 'the candle'), ('freedom', 'the open gate'))

# Roles of the known people and the kind of work each is famous for.
ROLES = (('explorer', 'the travel journal'), ('composer', 'the symphony'),
         ('painter', 'the painting'), ('astronomer', 'the star atlas'),
         ('architect', 'the building'), ('mathematician', 'the treatise'))
WRITER = ('writer', 'the book')
AWARD_KINDS = ('Prize', 'Medal', 'Award', 'Laurel')

# Words for generated titles, and for the generic descriptive text of places.
ADJECTIVES = ('Silent', 'Golden', 'Broken', 'Hidden', 'Distant', 'Burning', 'Quiet', 'Pale',
              'Crimson', 'Hollow', 'Wandering', 'Forgotten', 'Bright', 'Winter', 'Salt',
              'Iron', 'Last', 'Narrow', 'Endless', 'Northern')
NOUNS = ('Garden', 'River', 'Lantern', 'Harbour', 'Mirror', 'Orchard', 'Tower', 'Letter',
         'Bridge', 'Storm', 'Clock', 'Island', 'Song', 'Map', 'Door', 'Feather', 'Road',
         'Shadow', 'Bell', 'Window')
SEASONS = ('Spring', 'Summer', 'Autumn', 'Winter')
CLIMATES = ('long cold winters', 'hot dry summers', 'mild rainy weather', 'strong sea winds',
            'heavy autumn fogs', 'bright clear skies', 'sudden summer storms', 'deep snow')
GOODS = ('salt', 'copper', 'wool', 'amber', 'timber', 'tea', 'spices', 'glass', 'silk',
         'olives', 'dried fish', 'honey', 'paper', 'tin', 'leather', 'rice')
SIZES = ('small', 'busy', 'quiet', 'large', 'old', 'growing')
